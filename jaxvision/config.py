"""The training configuration schema: every key ``train_and_evaluate`` understands.

Experiment files in ``experiments/configs/`` start from :func:`default_config` and change
what they need; the result is locked, so a typo in a key (in a file or on the command line,
``--config.batch_sze=64``) is an error with a "did you mean" hint.
"""
from __future__ import annotations

import difflib

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "mnist_cnn"
    c.model_kwargs = ml_collections.ConfigDict()  # passed to create_model(model, **kwargs)
    c.num_classes = 0          # 0: taken from the dataset
    c.dtype = "float32"        # compute dtype; 'bfloat16' for mixed precision (params stay f32)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.source = "bundled"       # bundled | idx | tfds | folder | array_record
    c.dataset.name = ""                # tfds name, e.g. 'cifar10'
    c.dataset.path = ""                # idx / folder root
    c.dataset.data_dir = ""            # tfds data_dir
    c.dataset.eval_split = "validation"  # 'validation' (held out from train) or 'test'
    c.dataset.validation_size = 10_000   # last N training examples held out
    c.dataset.train_size = 0           # >0: use only the first N training examples
    c.dataset.image_size = ()          # (H, W) to which folder images are resized
    c.dataset.channels = 0             # folder images decoded to this many channels (0: model's)
    c.dataset.skip_corrupt = False     # folder: skip and count undecodable files
    c.dataset.verify = "header"        # folder: header | full | none (checks at load time)
    c.dataset.mean = ()                # () : the model's model_cfg mean/std
    c.dataset.std = ()
    # Streaming sources (folder, tfds): host transforms on the full decoded image, in the
    # loader's worker processes (jaxvision/data/transforms.py; docs/data.md).
    c.dataset.train_transform = "random_resized_crop"  # | scale_jitter | alexnet | center
    c.dataset.rrc_scale = (0.08, 1.0)  # random_resized_crop: area fraction (Szegedy et al.)
    c.dataset.rrc_ratio = (3 / 4, 4 / 3)  # ... and aspect range, sampled log-uniformly
    c.dataset.scale_jitter = (256, 480)  # scale_jitter: shorter side range (VGG / ResNet)
    c.dataset.train_interpolation = "area"  # resize of training crops: area (OpenCV's
    #   pixel-area shrink, as FFCV; ~2x faster) | bilinear (Pillow's, as torchvision) | ...
    c.dataset.flip = True              # random horizontal flip of training crops
    c.dataset.decoder = "libjpeg-turbo"  # host JPEG decoding: libjpeg-turbo (simplejpeg) |
    #   pillow; other formats always go through Pillow
    c.dataset.crop_pct = 0.0           # eval: shorter side -> input / crop_pct; 0: the model's
    c.dataset.interpolation = ""       # eval resize; '': the model's (model_cfg, as timm)
    c.dataset.workers = -1             # streamed data: worker processes making batches
    #   (grain; 0: one thread of the training process; -1: one per CPU core). Batches and
    #   their random crops depend on (seed, step) only, never on this (docs/data.md)
    c.dataset.prefetch = 2             # streamed data: batches sent to the devices early
    c.dataset.distort = ""             # '' | R | RTS | P | TC: distorted MNIST (Jaderberg et
    #   al., 2015): training images distorted afresh every step on device, eval images once
    #   with a fixed key (the same held-out set in every run); see jaxvision/data/distort.py

    c.batch_size = 128                 # global batch over all devices and hosts
    c.eval_batch_size = 0              # 0: same as batch_size
    c.num_epochs = 1.0
    c.num_train_steps = 0              # >0 overrides num_epochs

    c.optimizer = "sgd"                # sgd | adam  (decay_type='decoupled' -> SGDW / AdamW)
    c.learning_rate = 0.1
    c.lr_scaling = "none"              # 'linear': lr * batch_size / 256 (Goyal et al.)
    c.momentum = 0.9
    c.nesterov = False
    c.beta1 = 0.9
    c.beta2 = 0.999
    c.adam_eps = 1e-8
    c.weight_decay = 0.0
    c.decay_type = "coupled"           # coupled (L2) | decoupled (SGDW / AdamW)
    c.weight_decay_mask = "no_bias_no_norm"
    c.schedule = "cosine"              # constant | step | cosine | sgdr | linear
    c.warmup_epochs = 0.0
    c.warmup_steps = 0
    c.warmup_init = 0.0                # multiplier at the first warmup step
    c.min_lr_ratio = 0.0
    c.step_epochs = ()                 # 'step' schedule boundaries, in epochs
    c.step_gamma = 0.1
    c.sgdr_t0 = 10.0                   # epochs of the first SGDR cycle
    c.sgdr_tmult = 2.0
    c.grad_clip_norm = 0.0
    c.agc_clip = 0.0                   # adaptive gradient clipping threshold (NFNets: 0.01)
    c.agc_exclude = ("head", "fc")
    c.max_norm = 0.0                   # >0: project weight columns to ||w||_2 <= max_norm

    c.loss = "softmax_xent"            # softmax_xent | margin (CapsNet)
    c.label_smoothing = 0.0
    c.augment = ""                     # e.g. "random_crop(32, pad=4)|flip_lr"
    c.mix = ""                         # "" | "mixup(alpha=0.2)" | "cutmix(alpha=1.0)"
    c.bn_group_size = 0                # >0: batch-norm statistics over groups of k examples
    c.ema_decay = 0.0                  # >0: keep an exponential moving average of the weights
    c.eval_with_ema = True             # evaluate with the EMA weights when they exist
    c.eval_crops = "center"            # center | flip | shift (1-pixel shifts) | ten_crop

    c.seed = 0
    c.log_every_steps = 50
    c.eval_every_steps = 0             # 0: at the end of every epoch
    c.checkpoint_every_steps = 0       # 0: at the end of every epoch
    c.max_to_keep = 3
    c.async_checkpoint = True
    c.init_from = ""                   # workdir/checkpoint whose params + batch stats start
    #   the run (never its optimizer state); see jaxvision/finetune.py
    c.pretrained = ""                  # 'default' (timm's default tag) | tag | weights path
    c.freeze = ""                      # fnmatch patterns (comma-separated) of params kept fixed
    c.restart = False                  # start afresh in a used workdir: what is there is moved
    #   aside to WORKDIR/replaced-<time>/ (never deleted); see docs/checkpoints.md
    c.max_consecutive_nonfinite = 10
    c.profile_steps = ()               # (start, stop): jax.profiler trace of steps [start, stop)
    #   written to WORKDIR/profile (TensorBoard's profile plugin or Perfetto opens it;
    #   experiments/trace_summary.py sums it per op)

    c.kernels = ml_collections.ConfigDict()  # see jaxvision/kernels.py; '' = environment/auto
    c.kernels.conv = ""                # auto | onednn | xla | lax | matmul (every layers.Conv)
    c.kernels.conv_precision = ""      # auto (float32) | float32 | bfloat16 (oneDNN primitives
    #   multiply in bfloat16, accumulate in float32, where the CPU can; needs conv=onednn)
    c.kernels.attention = ""           # auto | xla | cudnn (ViT-style attention)
    c.kernels.cpu_conv_library = ""    # auto | onednn | ynnpack (XLA:CPU's own convolutions;
    #   the command line applies it before JAX starts)
    return c


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.lock()
    c.model_kwargs.unlock()  # free-form: forwarded to the model, checked by create_model
    return c


def validate_keys(config, reference=None, prefix: str = ""):
    """Every key of ``config`` must exist in the schema; raise naming the first that doesn't."""
    reference = default_config() if reference is None else reference
    for key in config.keys():
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            raise KeyError(f"unknown config key {prefix + key!r}.{hint}")
        sub = config[key]
        if (isinstance(sub, ml_collections.ConfigDict) and key != "model_kwargs"
                and isinstance(reference[key], ml_collections.ConfigDict)):
            validate_keys(sub, reference[key], prefix + key + ".")


# ------------------------------------------------------------------------------------------
# Range checks (run before anything is loaded or compiled)
# ------------------------------------------------------------------------------------------

# Spellings accepted for ``config.dtype``, mapped to the numpy name the trainer uses.
DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
                 "bfloat16": "bfloat16", "bf16": "bfloat16",
                 "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16"}

# Sources whose held-out split is fixed by the source itself (``dataset.validation_size`` is
# not used by them) and the size they hold out.
FIXED_VALIDATION = {"bundled": 1_000}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(config) -> None:
    """Range-check every numeric setting; raise ``ValueError`` naming the first bad one.

    ``config.dtype`` aliases (``bf16``, ``fp32``, ...) are rewritten to their numpy name,
    so ``config.json`` and the run's identity record one spelling.
    """
    def need(ok: bool, msg: str):
        if not ok:
            raise ValueError(msg)

    def whole(key: str, value, minimum: int):
        need(_is_int(value) and value >= minimum,
             f"{key} must be a whole number >= {minimum}, got {value!r}")

    whole("max_to_keep", config.max_to_keep, 1)
    whole("log_every_steps", config.log_every_steps, 1)
    whole("batch_size", config.batch_size, 1)
    for key in ("eval_every_steps", "checkpoint_every_steps", "num_train_steps",
                "eval_batch_size", "num_classes", "bn_group_size", "warmup_steps"):
        whole(key + (" (0: default)" if key != "num_train_steps" else ""), config[key], 0)
    whole("max_consecutive_nonfinite", config.max_consecutive_nonfinite, 1)
    if config.num_train_steps == 0:
        need(isinstance(config.num_epochs, (int, float)) and not isinstance(
            config.num_epochs, bool) and config.num_epochs > 0,
            f"num_epochs must be > 0 when num_train_steps=0, got {config.num_epochs!r}")
    need(isinstance(config.learning_rate, (int, float)) and config.learning_rate >= 0,
         f"learning_rate must be >= 0, got {config.learning_rate!r}")
    need(0 <= config.label_smoothing < 1,
         f"label_smoothing must be in [0, 1), got {config.label_smoothing!r}")
    need(0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay!r}")
    dtype = str(config.dtype).lower()
    need(dtype in DTYPE_ALIASES, f"unknown dtype {config.dtype!r}; choose one of "
         f"{sorted(set(DTYPE_ALIASES.values()))} (aliases: {sorted(DTYPE_ALIASES)})")
    config.dtype = DTYPE_ALIASES[dtype]
    from jaxvision.evaluate import CROPS
    need(config.eval_crops in CROPS,
         f"unknown eval_crops {config.eval_crops!r}; choose one of {', '.join(CROPS)}")
    if "kernels" in config:
        from jaxvision import kernels
        for key in ("conv", "conv_precision", "attention", "cpu_conv_library"):
            if key in config.kernels:
                config.kernels[key] = kernels.check(key, config.kernels[key])
        with kernels.use(**kernels.from_config(config)):
            kernels.check_combination(kernels.conv(), kernels.conv_precision())
    ds = config.dataset
    whole("dataset.train_size (0: all)", ds.train_size, 0)
    need(_is_int(ds.workers) and ds.workers >= -1,
         f"dataset.workers must be a whole number >= -1 (worker processes; 0: in this "
         f"process; -1: one per CPU core), got {ds.workers!r}")
    whole("dataset.prefetch", ds.prefetch, 0)
    if ds.eval_split == "validation":
        fixed = FIXED_VALIDATION.get(ds.source)
        default = default_config().dataset.validation_size
        if fixed is not None:
            need(ds.validation_size in (default, fixed),
                 f"dataset.validation_size={ds.validation_size!r} is not used by the "
                 f"{ds.source!r} source, which holds out a fixed {fixed:,} examples; leave it "
                 f"unset (or set it to {fixed})")
        else:
            whole("dataset.validation_size", ds.validation_size, 1)


# ------------------------------------------------------------------------------------------
# Dataset presets shared by the experiment configs
# ------------------------------------------------------------------------------------------

def mnist_idx(c, path: str = "", epochs: float = 10, batch: int = 128):
    """The 60,000 MNIST training images as IDX files; the last 10,000 held out."""
    c.dataset.source = "idx"
    c.dataset.path = path
    c.dataset.eval_split = "validation"
    c.dataset.validation_size = 10_000
    c.batch_size = batch
    c.num_epochs = epochs
    c.log_every_steps = 100
    return c


def cifar(c, name: str = "cifar10", epochs: float = 200, batch: int = 128):
    """CIFAR from tfds, evaluated on its test split, with the standard crop + flip."""
    c.dataset.source = "tfds"
    c.dataset.name = name
    c.dataset.eval_split = "test"
    c.dataset.mean = (0.4914, 0.4822, 0.4465)
    c.dataset.std = (0.2470, 0.2435, 0.2616)
    c.batch_size = batch
    c.num_epochs = epochs
    c.augment = "random_crop(32, pad=4)|flip_lr"
    c.log_every_steps = 100
    return c


def imagenet(c, epochs: float = 90, batch: int = 256):
    """ImageNet-1k from tfds (imagenet2012, prepared in dataset.data_dir), streamed through
    the host transforms (dataset.train_transform / crop_pct; docs/data.md), validation split
    for evaluation."""
    c.dataset.source = "tfds"
    c.dataset.name = "imagenet2012"
    c.dataset.eval_split = "validation"
    c.batch_size = batch
    c.num_epochs = epochs
    c.augment = ""  # crop and flip: the host transform's
    c.log_every_steps = 500
    return c
