"""Random Erasing on WRN-28-10, CIFAR-100 (Zhong et al., 2020).

    python -m jaxvision.train --config experiments/configs/random_erasing_wrn28_10_cifar100.py --workdir /tmp/random_erasing_wrn28_10_cifar100 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 17.73% test error (CIFAR-100, WRN-28-10 + Random Erasing).
Expected result: ~18% test error.
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar100", epochs=200)
    c.model = "wrn28_10"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.schedule = "step"
    c.step_epochs = (60, 120, 160)
    c.step_gamma = 0.2
    c.augment = "random_crop(32, pad=4)|flip_lr|random_erasing(p=0.5, s_l=0.02, s_h=0.4, r_1=0.3)"
    return lock(c)
