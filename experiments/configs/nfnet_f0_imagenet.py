"""NFNet-F0 with adaptive gradient clipping on ImageNet-1k (Brock et al., 2021).

    python -m jaxvision.train --config experiments/configs/nfnet_f0_imagenet.py --workdir /tmp/nfnet_f0_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: NFNet-F0: 83.6% top-1 (256px test).
Expected result: ~83% top-1.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=360, batch=4096)
    c.model = "dm_nfnet_f0"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 2e-5
    c.decay_type = "decoupled"
    c.schedule = "cosine"
    c.warmup_epochs = 5
    c.agc_clip = 0.01
    c.agc_exclude = ("head", "fc")
    c.label_smoothing = 0.1
    c.dataset.train_transform = "random_resized_crop"  # host, 192 (the model's input); + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.9, "bicubic"  # eval: squash (model_cfg)
    c.augment = "randaugment(n=2, m=10)"  # on device
    c.mix = "mixup(alpha=0.2)|cutmix(alpha=1.0)"
    c.ema_decay = 0.99999
    return lock(c)
