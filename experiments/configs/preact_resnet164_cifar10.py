"""Pre-activation ResNet-164 on CIFAR-10 (He et al., 2016, Identity Mappings).

    python -m jaxvision.train --config experiments/configs/preact_resnet164_cifar10.py --workdir /tmp/preact_resnet164_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 5.46% test error.
Expected result: ~5.5% test error.
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar10", epochs=164)
    c.model = "preact_resnet164_cifar"
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
