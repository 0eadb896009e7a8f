"""Network-in-Network on CIFAR-10 with dropout and augmentation (Lin et al., 2014).

    python -m jaxvision.train --config experiments/configs/nin_cifar10.py --workdir /tmp/nin_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 8.81% test error (NIN + dropout + data augmentation).
Expected result: ~9-10% test error.
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar10", epochs=200)
    c.model = "nin_cifar"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 1e-4
    c.schedule = "cosine"
    return lock(c)
