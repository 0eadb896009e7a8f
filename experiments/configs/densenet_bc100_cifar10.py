"""DenseNet-BC (L=100, k=12) on CIFAR-10 (Huang et al., 2017).

    python -m jaxvision.train --config experiments/configs/densenet_bc100_cifar10.py --workdir /tmp/densenet_bc100_cifar10 \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 1 GPU
Paper's figure: 4.51% test error (C10+).
Expected result: ~4.5-5% test error.
"""
from jaxvision.config import default_config, lock, cifar


def get_config(arg: str | None = None):
    c = default_config()
    c = cifar(c, "cifar10", epochs=300)
    c.model = "densenet_bc100_k12_cifar"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 1e-4
    c.batch_size = 64
    c.schedule = "step"
    c.step_epochs = (150, 225)
    return lock(c)
