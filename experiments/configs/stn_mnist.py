"""ST-CNN on MNIST (Jaderberg et al., 2015).

    python -m jaxvision.train --config experiments/configs/stn_mnist.py --workdir /tmp/stn_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: 1 CPU or GPU
Paper's figure: RTS-distorted MNIST: ST-CNN 0.8% test error (FCN 2.1%, CNN 1.2%).
Expected result: ~0.5% held-out error on undistorted MNIST; see jaxvision/data/distort.py for the distorted variants.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=20)
    c.model = "stn_cnn_mnist"
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.schedule = "cosine"
    return lock(c)
