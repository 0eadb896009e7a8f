"""ViT-B/16 on ImageNet-1k (Dosovitskiy et al., 2021), DeiT-style regularised recipe.

    python -m jaxvision.train --config experiments/configs/vit_b16_imagenet.py --workdir /tmp/vit_b16_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: ViT-B/16 trained from scratch on ImageNet-1k: ~77.9% top-1 (DeiT recipe 81.8%).
Expected result: ~79-81% top-1 with the DeiT-style recipe below.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=300, batch=1024)
    c.model = "vit_base_patch16_224"
    c.optimizer = "adam"
    c.decay_type = "decoupled"
    c.schedule = "cosine"
    c.learning_rate = 5e-4
    c.lr_scaling = "linear"
    c.weight_decay = 0.05 * 5e-4
    c.warmup_epochs = 5
    c.label_smoothing = 0.1
    c.model_kwargs.drop_path_rate = 0.1
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bicubic"  # eval (DeiT)
    c.augment = "randaugment(n=2, m=9)|random_erasing(p=0.25)"  # on device
    c.mix = "mixup(alpha=0.8)|cutmix(alpha=1.0)"
    c.grad_clip_norm = 1.0
    return lock(c)
