"""VGG-16 with scale jittering on ImageNet-1k (Simonyan & Zisserman, 2015).

    python -m jaxvision.train --config experiments/configs/vgg16_imagenet.py --workdir /tmp/vgg16_imagenet \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Hardware assumed: 8 GPUs (or a TPU slice); global batch as set
Paper's figure: VGG-16 (D): 25.6% top-1 (dense, multi-scale); 27.0% re-implemented (SE paper).
Expected result: ~27% top-1 error single crop.
"""
from jaxvision.config import default_config, lock, imagenet


def get_config(arg: str | None = None):
    c = default_config()
    c = imagenet(c, epochs=74, batch=256)
    c.model = "vgg16"
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.schedule = "step"
    c.step_epochs = (30, 60)
    c.dataset.train_transform = "scale_jitter"  # host: shorter side in [256, 512], 224 crop
    c.dataset.scale_jitter = (256, 512)
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"  # eval: 256 -> 224 centre
    c.augment = ""  # the flip is the host transform's
    return lock(c)
