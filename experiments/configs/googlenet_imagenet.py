"""GoogLeNet (Inception-v1) with auxiliary classifiers on ImageNet-1k (Szegedy et al., 2015).

    python -m jaxvision.train --config experiments/configs/googlenet_imagenet.py --workdir /tmp/googlenet_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: GoogLeNet: 6.67% top-5 (7-model ensemble, 144 crops); ~10.07% single model single crop.
Expected result: ~30% top-1 error single crop.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=90, batch=256)
    c.model = "googlenet_paper"
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.schedule = "step"
    c.step_epochs = (30, 60, 80)
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = ""  # the crop and flip are the host transform's
    return lock(c)
