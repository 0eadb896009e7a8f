"""ODE-Net on MNIST, adjoint gradients (Chen et al., 2018).

    python -m jaxvision.train --config experiments/configs/odenet_mnist.py --workdir /tmp/odenet_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Hardware assumed: a GPU for the 160 epochs (about 9 minutes per epoch on a 2-core CPU)
Paper's figure: ODE-Net 0.42%, RK-Net 0.47%, ResNet 0.41% test error.
Expected result: ~0.5% held-out error.

RK-Net on MNIST, the paper's comparison: the same network, backpropagated through the solver's
steps, trained the same way:

    python -m jaxvision.train --config experiments/configs/odenet_mnist.py:rknet --workdir /tmp/rknet_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Paper's figure: RK-Net 0.47% test error.
Expected result: close to the ODE-Net's (~0.5% held-out error).

ResNet on MNIST, the paper's other comparison: six residual blocks in place of the ODE block:

    python -m jaxvision.train --config experiments/configs/odenet_mnist.py:resnet6 --workdir /tmp/resnet6_mnist \
        --config.dataset.path=/path/to/mnist_idx_folder

Paper's figure: ResNet 0.41% test error.
Expected result: close to the ODE-Net's (~0.5% held-out error).
"""
from jaxvision.config import default_config, lock, mnist_idx

MODELS = {"": "odenet_mnist", "rknet": "rknet_mnist", "resnet6": "resnet6_mnist"}


def get_config(arg: str | None = None):
    if (arg or "") not in MODELS:
        raise ValueError(f"unknown config argument {arg!r}; use one of {tuple(MODELS)}")
    c = default_config()
    c = mnist_idx(c, epochs=160)
    c.model = MODELS[arg or ""]
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.schedule = "step"
    c.step_epochs = (60, 100, 140)
    c.augment = "random_crop(28, pad=2)"
    return lock(c)
