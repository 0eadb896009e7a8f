"""MLP-Mixer B/16 on ImageNet-1k (Tolstikhin et al., 2021).

    python -m jaxvision.train --config experiments/configs/mixer_b16_imagenet.py --workdir /tmp/mixer_b16_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: Mixer-B/16 on ImageNet-1k from scratch: 76.44% top-1.
Expected result: ~76% top-1.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=300, batch=4096)
    c.model = "mixer_b16_224"
    c.optimizer = "adam"
    c.decay_type = "decoupled"
    c.schedule = "cosine"
    c.learning_rate = 1e-3
    c.weight_decay = 0.1 * 1e-3
    c.warmup_steps = 10_000
    c.grad_clip_norm = 1.0
    c.model_kwargs.drop_path_rate = 0.1
    c.dataset.train_transform = "random_resized_crop"  # host, on the full image; + flip
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bicubic"  # eval
    c.augment = "randaugment(n=2, m=10)"  # on device
    c.mix = "mixup(alpha=0.5)"
    return lock(c)
