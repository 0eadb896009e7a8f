"""Fine-tune ImageNet-pretrained resnet50 (timm's default tag) on an image folder.

    python -m jaxvision.train --config experiments/configs/finetune_folder.py \
        --config.dataset.path=/data/my_images --workdir /tmp/finetune_folder

Linear probe (only the new classifier trains; the backbone is frozen):

    python -m jaxvision.train --config experiments/configs/finetune_folder.py:linear \
        --config.dataset.path=/data/my_images --workdir /tmp/finetune_folder_linear

``dataset.path`` holds ``<class>/<images>`` (or ``{train,val}/<class>/<images>``); the
classifier is replaced by a new one for the folder's classes, the rest starts from the
weights, which are fetched once from the Hugging Face hub (later runs read its cache, also
with ``HF_HUB_OFFLINE=1``).  Classify new images with the result:

    python -m jaxvision.predict --workdir /tmp/finetune_folder photo.jpg

Paper's figure: none (this config reproduces no paper).  Expected result: none is recorded
(this repository holds no such image folder); ``tests/test_finetune.py`` checks the
mechanics on a small model.
"""
from jaxvision.config import default_config, lock


def get_config(arg: str | None = None):
    c = default_config()
    c.model = "resnet50"
    c.pretrained = "default"           # timm/resnet50.a1_in1k
    c.dataset.source = "folder"
    c.dataset.path = ""
    c.dataset.image_size = (224, 224)
    c.dataset.validation_size = 200    # held out from the end of the training folder
    c.batch_size = 64
    c.num_epochs = 10
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.schedule = "cosine"
    c.warmup_epochs = 1
    c.augment = "flip_lr"
    c.log_every_steps = 20
    if arg == "linear":
        c.freeze = "conv1*,bn1*,layer*"  # everything but the classifier (fc)
        c.learning_rate = 0.1
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; use none or 'linear'")
    return lock(c)
