"""ODE-Net on MNIST, adjoint gradients (Chen et al., 2018).

    python -m jaxvision.train --config experiments/configs/odenet_mnist.py --workdir /tmp/odenet_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: a GPU for the 160 epochs (about 9 minutes per epoch on a 2-core CPU)
Paper's figure: ODE-Net 0.42%, RK-Net 0.47%, ResNet 0.41% test error.
Expected result: ~0.5% held-out error.  arg 'rknet' or 'resnet6' trains the comparison models.
"""
from jaxvision.config import default_config, lock, mnist_idx


def get_config(arg: str | None = None):
    c = default_config()
    c = mnist_idx(c, epochs=160)
    c.model = {"rknet": "rknet_mnist", "resnet6": "resnet6_mnist"}.get(arg or "", "odenet_mnist")
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.schedule = "step"
    c.step_epochs = (60, 100, 140)
    c.augment = "random_crop(28, pad=2)"
    return lock(c)
