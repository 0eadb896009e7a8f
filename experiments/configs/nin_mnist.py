"""Network-in-Network on MNIST (Lin et al., 2014).

    python -m jaxvision.train --config experiments/configs/nin_mnist.py --workdir /tmp/nin_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: 1 CPU or GPU; ~30 min on a 2-core CPU per epoch budget
Paper's figure: 0.47% test error (NIN + dropout, Table 4).
Expected result: <= 0.6% error on the 10,000 held-out training images.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=20)
    c.model = "nin_mnist"
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.warmup_epochs = 1
    return lock(c)
