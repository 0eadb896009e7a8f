"""ConvNeXt-T on ImageNet-1k with its training recipe (Liu et al., 2022).

    python -m jaxvision.train --config experiments/configs/convnext_tiny_imagenet.py --workdir /tmp/convnext_tiny_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: ConvNeXt-T: 82.1% top-1 (4.5G FLOPs, 28.6M params).
Expected result: ~82% top-1.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=300, batch=4096)
    c.model = "convnext_tiny"
    c.optimizer = "adam"
    c.decay_type = "decoupled"
    c.schedule = "cosine"
    c.learning_rate = 4e-3
    c.weight_decay = 0.05 * 4e-3
    c.warmup_epochs = 20
    c.label_smoothing = 0.1
    c.model_kwargs.drop_path_rate = 0.1
    c.ema_decay = 0.9999
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bicubic"  # eval (ConvNeXt at 224)
    c.augment = "randaugment(n=2, m=9)|random_erasing(p=0.25)"  # on device
    c.mix = "mixup(alpha=0.8)|cutmix(alpha=1.0)"
    return lock(c)
