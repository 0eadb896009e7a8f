"""ST-CNN (affine) on RTS-distorted MNIST (Jaderberg et al., 2015, section 4.1).

    python -m jaxvision.train --config experiments/configs/stn_mnist.py --workdir /tmp/stn_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Training digits are rotated by up to 45 degrees, scaled by 0.7-1.2 and placed at random in
a 42x42 canvas afresh at every step (on device); the 10,000 held-out digits are distorted
once with a fixed key, so every run is scored on the same images (``dataset.distort``).

Hardware assumed: 1 CPU or GPU (about 2.7 minutes per epoch on a 2-core CPU)
Paper's figure: RTS-distorted MNIST test error: ST-CNN (affine) 0.5%, CNN 0.8%, FCN 5.2%.
The paper trains with SGD for 150k iterations of 256 images; this config uses Adam with a
cosine schedule so that a few epochs get close.  Measured results are in docs/results.md.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=20)
    c.dataset.distort = "RTS"
    c.model = "stn_cnn_mnist"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    return lock(c)
