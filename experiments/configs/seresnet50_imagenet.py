"""SE-ResNet-50 on ImageNet-1k (Hu et al., 2018).

    python -m jaxvision.train --config experiments/configs/seresnet50_imagenet.py --workdir /tmp/seresnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: SE-ResNet-50: 23.29% top-1 error.
Expected result: ~23.5% top-1 error.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=90, batch=256)
    c.model = "seresnet50"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.schedule = "step"
    c.step_epochs = (30, 60, 80)
    c.warmup_epochs = 5
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = ""  # the crop and flip are the host transform's
    return lock(c)
