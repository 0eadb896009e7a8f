"""AlexNet (with LRN) on ImageNet-1k (Krizhevsky et al., 2012).

    python -m jaxvision.train --config experiments/configs/alexnet_imagenet.py --workdir /tmp/alexnet_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: 37.5% top-1 error (single CNN).
Expected result: ~40% top-1 error.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=90, batch=128)
    c.model = "alexnet_paper"
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.schedule = "step"
    c.step_epochs = (30, 60, 80)
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.rrc_scale = (0.35, 1.0)
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = "pca_lighting(std=0.1)"  # on device
    return lock(c)
