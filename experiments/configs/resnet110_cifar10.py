"""ResNet-110 on CIFAR-10 (He et al., 2016).

    python -m jaxvision.train --config experiments/configs/resnet110_cifar10.py --workdir /tmp/resnet110_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 6.43% test error (1.7M parameters).
Expected result: ~6.5% test error.

Pre-activation ResNet-164 on CIFAR-10 (He et al., 2016, Identity Mappings), same recipe:

    python -m jaxvision.train --config experiments/configs/resnet110_cifar10.py:preact_resnet164 --workdir /tmp/preact_resnet164_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Paper's figure: 5.46% test error.
Expected result: ~5.5% test error.
"""
from jaxvision.config import default_config, lock, cifar

MODELS = {"": "resnet110_cifar", "preact_resnet164": "preact_resnet164_cifar"}


def get_config(arg: str | None = None):
    if (arg or "") not in MODELS:
        raise ValueError(f"unknown config argument {arg!r}; use one of {tuple(MODELS)}")
    c = default_config()
    c = cifar(c, "cifar10", epochs=164)
    c.model = MODELS[arg or ""]
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 1e-4
    c.schedule = "step"
    c.step_epochs = (82, 123)
    c.warmup_epochs = 1
    c.warmup_init = 0.1
    return lock(c)
