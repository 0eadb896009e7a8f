"""CutMix on ResNet-50, ImageNet-1k (Yun et al., 2019).

    python -m jaxvision.train --config experiments/configs/cutmix_resnet50_imagenet.py --workdir /tmp/cutmix_resnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: ResNet-50 + CutMix: 21.40% top-1 error (78.6% top-1).
Expected result: ~21.5% top-1 error after 300 epochs.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=300, batch=256)
    c.model = "resnet50"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.schedule = "step"
    c.step_epochs = (75, 150, 225)
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = ""  # the crop and flip are the host transform's
    c.mix = "cutmix(alpha=1.0)"
    return lock(c)
