"""WRN-28-10 on CIFAR-10/100 (Zagoruyko & Komodakis, 2016).

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py --workdir /tmp/wrn28_10_cifar \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1-8 GPUs
Paper's figure: CIFAR-10 4.00% / CIFAR-100 19.25%; with dropout 3.89% / 18.85%.
Expected result: ~4.0% (CIFAR-10).

The argument after ``:`` is a list of words joined by ``_``: ``cifar100`` (the dataset),
``dropout`` (0.3 between the convolutions), ``random_erasing`` (added to the crop and flip),
and at most one of the recipes ``mixup`` and ``sgdr`` in place of the paper's step schedule.

WRN-28-10 with dropout on CIFAR-100 (Zagoruyko & Komodakis, 2016):

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py:cifar100_dropout --workdir /tmp/wrn28_10_cifar100_dropout \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Paper's figure: 18.85% test error (CIFAR-100, WRN-28-10 with dropout).
Expected result: ~19% test error.

mixup on WRN-28-10, CIFAR-10 (Zhang et al., 2018):

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py:mixup --workdir /tmp/mixup_wrn28_10_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: WRN-28-10 + mixup (alpha=1): 2.7% test error (ERM 3.8%).
Expected result: ~3% test error.

SGDR warm restarts on WRN-28-10, CIFAR-10 (Loshchilov & Hutter, 2017):

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py:sgdr --workdir /tmp/sgdr_wrn28_10_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 4.03% test error (T0=10, Tmult=2, median of runs).
Expected result: ~4.0% test error after 150 epochs (end of the 4th cycle).

Random Erasing on WRN-28-10, CIFAR-100 (Zhong et al., 2020):

    python -m jaxvision.train --config experiments/configs/wrn28_10_cifar.py:random_erasing_cifar100 --workdir /tmp/random_erasing_wrn28_10_cifar100 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 17.73% test error (CIFAR-100, WRN-28-10 + Random Erasing).
Expected result: ~18% test error.
"""
import re

from jaxvision.config import default_config, lock, cifar

WORDS = ("cifar100", "dropout", "random_erasing", "mixup", "sgdr")


def get_config(arg: str | None = None):
    arg = arg or ""
    words = re.findall("|".join(WORDS), arg)
    if "_".join(words) != arg or len(set(words)) < len(words) or {"mixup", "sgdr"} <= {*words}:
        raise ValueError(f"unknown config argument {arg!r}: use words of {WORDS} joined by '_', "
                         "each at most once, and at most one of 'mixup' and 'sgdr'")
    c = default_config()
    c = cifar(c, "cifar100" if "cifar100" in words else "cifar10",
              epochs=150 if "sgdr" in words else 200)
    c.model = "wrn28_10"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    if "mixup" in words:  # Zhang et al.: divided by 10 at epochs 100 and 150
        c.weight_decay = 1e-4
        c.schedule = "step"
        c.step_epochs = (100, 150)
        c.mix = "mixup(alpha=1.0)"
    elif "sgdr" in words:  # cosine cycles of 10, 20, 40 and 80 epochs
        c.learning_rate = 0.05
        c.schedule = "sgdr"
        c.sgdr_t0 = 10
        c.sgdr_tmult = 2
    else:  # the WRN paper: divided by 5 at epochs 60, 120 and 160
        c.schedule = "step"
        c.step_epochs = (60, 120, 160)
        c.step_gamma = 0.2
    if "random_erasing" in words:
        c.augment += "|random_erasing(p=0.5, s_l=0.02, s_h=0.4, r_1=0.3)"
    if "dropout" in words:
        c.model_kwargs.dropout_rate = 0.3
    return lock(c)
