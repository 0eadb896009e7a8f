"""BN-Inception on ImageNet-1k (Ioffe & Szegedy, 2015).

    python -m jaxvision.train --config experiments/configs/bn_inception_imagenet.py --workdir /tmp/bn_inception_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: BN-Inception single crop: 25.2% top-1 error.
Expected result: ~26% top-1 error.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=80, batch=256)
    c.model = "bn_inception"
    c.optimizer = "sgd"
    c.learning_rate = 0.045
    c.momentum = 0.9
    c.weight_decay = 4e-5
    c.schedule = "step"
    c.step_epochs = (10, 20, 30, 40, 50, 60, 70)
    c.step_gamma = 0.5
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = ""  # the crop and flip are the host transform's
    return lock(c)
