"""SGDR warm restarts on WRN-28-10, CIFAR-10 (Loshchilov & Hutter, 2017).

    python -m jaxvision.train --config experiments/configs/sgdr_wrn28_10_cifar10.py --workdir /tmp/sgdr_wrn28_10_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 4.03% test error (T0=10, Tmult=2, median of runs).
Expected result: ~4.0% test error after 150 epochs (end of the 4th cycle).
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar10", epochs=150)
    c.model = "wrn28_10"
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.schedule = "sgdr"
    c.sgdr_t0 = 10
    c.sgdr_tmult = 2
    return lock(c)
