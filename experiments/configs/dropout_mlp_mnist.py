"""Dropout MLP with max-norm constraint on MNIST (Srivastava et al., 2014).

    python -m jaxvision.train --config experiments/configs/dropout_mlp_mnist.py --workdir /tmp/dropout_mlp_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: 1 CPU
Paper's figure: ~1.05-1.25% test error for dropout nets with max-norm; 1-layer MLP 1.60%.
Expected result: 1.42% held-out error (last 10,000 training digits) after 170 epochs at
batch 256, about 27 minutes on a 2-core CPU, measured by ``python experiments/mnist_record.py
--rows dropout_mlp --seeds 0`` (docs/mnist_record.md; row ``dropout_mlp_no_max_norm`` is the
same run with ``--config.max_norm=0``).  The curve flattens after about 100 epochs (1.38%
held out at epoch 100): within this budget it does not reach the paper's figures.

Maxout MLP on MNIST (Goodfellow et al., 2013), same recipe:

    python -m jaxvision.train --config experiments/configs/dropout_mlp_mnist.py:maxout --workdir /tmp/maxout_mlp_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Paper's figure: maxout MLP with dropout: 0.94% test error (permutation-invariant MNIST).
Expected result: not measured here; the same schedule as the dropout MLP's.
"""
from jaxvision.config import default_config, lock, mnist_idx

MODELS = {"": "dropout_mlp_mnist", "maxout": "maxout_mlp_mnist"}


def get_config(arg: str | None = None):
    if (arg or "") not in MODELS:
        raise ValueError(f"unknown config argument {arg!r}; use one of {tuple(MODELS)}")
    c = default_config()
    c = mnist_idx(c, epochs=170, batch=256)
    c.model = MODELS[arg or ""]
    c.optimizer = "sgd"
    # With momentum 0.95: 0.8 per unit gradient.  Higher rates lose units for good: after 5
    # of 10 epochs with inputs in [0, 1], 0.2 held out 95.7% and 0.5 18.7% against 0.04's
    # 97.5%; 0.1 at batch 128 diverged on standardised pixels.
    c.learning_rate = 0.04
    c.momentum = 0.95
    c.max_norm = 3.5
    c.schedule = "cosine"
    c.eval_every_steps = 1950  # every 10 epochs, and at the end
    return lock(c)
