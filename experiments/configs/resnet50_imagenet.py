"""ResNet-50 on ImageNet-1k with the linear scaling rule and warmup (He et al., 2016; Goyal et al., 2017).

    python -m jaxvision.train --config experiments/configs/resnet50_imagenet.py --workdir /tmp/resnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: ResNet-50: 24.7% top-1 (paper, 10-crop); 24.80% re-implemented single crop (SE paper).
Expected result: ~24% top-1 error.

The papers below trained their networks with this recipe; the argument after ``:`` picks one.

SE-ResNet-50 on ImageNet-1k (Hu et al., 2018):

    python -m jaxvision.train --config experiments/configs/resnet50_imagenet.py:seresnet50 --workdir /tmp/seresnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Paper's figure: SE-ResNet-50: 23.29% top-1 error.
Expected result: ~23.5% top-1 error.

CBAM ResNet-50 on ImageNet-1k (Woo et al., 2018):

    python -m jaxvision.train --config experiments/configs/resnet50_imagenet.py:cbam_resnet50 --workdir /tmp/cbam_resnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Paper's figure: ResNet-50 + CBAM: 22.66% top-1 error.
Expected result: ~23% top-1 error.

CutMix on ResNet-50, ImageNet-1k (Yun et al., 2019), 300 epochs without warmup:

    python -m jaxvision.train --config experiments/configs/resnet50_imagenet.py:cutmix --workdir /tmp/cutmix_resnet50_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Paper's figure: ResNet-50 + CutMix: 21.40% top-1 error (78.6% top-1).
Expected result: ~21.5% top-1 error after 300 epochs.
"""
from jaxvision.config import default_config, lock, imagenet

VARIANTS = ("", "seresnet50", "cbam_resnet50", "cutmix")


def get_config(arg: str | None = None):
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"unknown config argument {arg!r}; use one of {VARIANTS}")
    c = default_config()
    c = imagenet(c, epochs=90, batch=256)
    c.model = "resnet50"
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
    if arg in ("seresnet50", "cbam_resnet50"):
        c.model = arg
    elif arg == "cutmix":
        c.num_epochs = 300
        c.step_epochs = (75, 150, 225)
        c.warmup_epochs = 0.0
        c.mix = "cutmix(alpha=1.0)"
    return lock(c)
