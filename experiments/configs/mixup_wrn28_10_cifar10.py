"""mixup on WRN-28-10, CIFAR-10 (Zhang et al., 2018).

    python -m jaxvision.train --config experiments/configs/mixup_wrn28_10_cifar10.py --workdir /tmp/mixup_wrn28_10_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: WRN-28-10 + mixup (alpha=1): 2.7% test error (ERM 3.8%).
Expected result: ~3% test error.
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar10", epochs=200)
    c.model = "wrn28_10"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 1e-4
    c.schedule = "step"
    c.step_epochs = (100, 150)
    c.mix = "mixup(alpha=1.0)"
    return lock(c)
