"""WRN-28-10 on CIFAR-10/100 (Zagoruyko & Komodakis, 2016).

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py --workdir /tmp/wrn28_10_cifar \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1-8 GPUs
Paper's figure: CIFAR-10 4.00% / CIFAR-100 19.25%; with dropout 3.89% / 18.85%.
Expected result: ~4.0% (CIFAR-10).  arg 'cifar100', 'dropout' or 'cifar100_dropout'.
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
    c.weight_decay = 5e-4
    c.schedule = "step"
    c.step_epochs = (60, 120, 160)
    c.step_gamma = 0.2
    arg = arg or ''
    if "cifar100" in arg:
        c.dataset.name = "cifar100"
    if "dropout" in arg:
        c.model_kwargs.dropout_rate = 0.3
    return lock(c)
