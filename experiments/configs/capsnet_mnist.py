"""CapsNet with 3 routing iterations and the reconstruction decoder (Sabour et al., 2017).

    python -m jaxvision.train --config experiments/configs/capsnet_mnist.py --workdir /tmp/capsnet_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: a GPU for the 50 epochs (about 19 minutes per epoch on a 2-core CPU)
Paper's figure: 0.25% test error (3 routing iterations, with reconstruction); baseline CNN 0.39%.
Expected result: ~0.3-0.35% held-out error after ~50 epochs with 2-pixel shifts.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=50, batch=128)
    c.model = "capsnet_mnist"
    c.loss = "margin"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "constant"
    c.augment = "random_crop(28, pad=2)"
    return lock(c)
