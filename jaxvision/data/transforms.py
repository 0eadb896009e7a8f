"""Per-example host transforms: encoded image bytes -> uint8 ``(size, size, C)``.

Each transform is a frozen (hence picklable) dataclass, called as
``transform(data, rng, path)`` inside the loader's worker processes.  All randomness comes
from ``rng`` (the loader passes ``np.random.default_rng([seed, step, example])``), so an
example's crop depends only on (seed, step, example), never on worker count or timing.
Every crop is taken from the *full* decoded image.

Training (see ``docs/data.md``):

* :class:`RandomResizedCrop` - Inception-style crops (Szegedy et al., 2015) with exactly
  torchvision's sampling rule (:func:`sample_rrc`), resized to the input, random flip.

Training crops are resized with ``interpolation='area'`` by default (OpenCV's pixel-area
averaging when shrinking, bilinear when enlarging, as FFCV trains): antialiased like
torchvision's Pillow filter and about twice as fast; ``'bilinear'`` gives Pillow's
(torchvision's) pixels.
* :class:`ScaleJitter` - shorter side random in ``[s_min, s_max]``, random square crop, flip
  (Simonyan & Zisserman, 2015; He et al., 2016).
* :class:`AlexNetCrop` - shorter side to 256, centre 256x256, random 224 crop, flip
  (Krizhevsky et al., 2012).

Evaluation: :class:`CenterCropEval` - timm's ``transforms_imagenet_eval``: resize the
shorter side to ``floor(size / crop_pct)`` with the model's interpolation, centre crop.

When a training crop covers at least twice the output size (each side), the JPEG is decoded
downscaled in the DCT domain (``decode.dct_min_size``) and the crop box is mapped onto the
smaller image with sub-pixel precision; evaluation always decodes at full size, so that it
matches timm's pixels.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from jaxvision.data import decode as _decode

TRAIN_TRANSFORMS = ("random_resized_crop", "scale_jitter", "alexnet", "center")
CROP_MODES = ("center", "squash")


def sample_rrc(rng: np.random.Generator, height: int, width: int,
               scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random-resized crop of a ``height x width`` image, by
    torchvision's ``RandomResizedCrop.get_params`` rule: up to 10 draws of an area fraction
    uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``, the first that fits
    placed uniformly; otherwise the central crop, its aspect clamped to ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def shorter_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``short``; the longer side is truncated,
    as torchvision's ``Resize(int)`` does."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _bytes(data):
    return data if isinstance(data, (bytes, bytearray, memoryview)) else _decode._as_bytes(data)


def _crop_resize(data, hw, box, out_hw, interpolation, channels, path, dct=True,
                 decoder="libjpeg-turbo"):
    """Resize the region ``box=(top, left, h, w)`` (original pixels, may be fractional) of
    the image to ``out_hw``, decoding at a reduced DCT scale when the region allows."""
    height, width = hw
    top, left, h, w = box
    min_size = (_decode.dct_min_size(height, width, h, w, *out_hw) if dct else None)
    img = _decode.decode(data, channels, min_size, path, decoder)
    if img.shape[:2] == (height, width) and all(float(v).is_integer() for v in box):
        top, left, h, w = (int(v) for v in box)
        return _decode.resize(img[top:top + h, left:left + w], out_hw, interpolation)
    sy, sx = img.shape[0] / height, img.shape[1] / width
    return _decode.resize(img, out_hw, interpolation,
                          box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))


def _train_crop(t, data, rng, path, sample_box):
    """The training crops' common path: read the stored size from the header, draw the box
    ``sample_box(rng, (h, w))`` (original pixels), decode and resize only what it needs, then
    flip; every random draw comes from ``rng``, in that order."""
    rng, data = _rng(rng), _bytes(data)
    hw = _decode.image_size(data, path)
    box = sample_box(rng, hw)
    out = _crop_resize(data, hw, box, (t.size, t.size), t.interpolation, t.channels, path,
                       t.dct, t.decoder)
    return _flip(out, rng, t.flip)


def _flip(img, rng, flip):
    if flip and rng.random() < 0.5:
        return np.ascontiguousarray(img[:, ::-1])
    return img


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


def _check_common(t):
    _decode.check_decoder(t.decoder)
    if not isinstance(t.size, int) or t.size <= 0:
        raise ValueError(f"{type(t).__name__}: size must be a positive int, got {t.size!r}")
    if t.interpolation not in _decode.INTERPOLATIONS:
        raise ValueError(f"{type(t).__name__}: interpolation must be one of "
                         f"{sorted(_decode.INTERPOLATIONS)}, got {t.interpolation!r}")
    if t.channels not in (1, 3):
        raise ValueError(f"{type(t).__name__}: channels must be 1 or 3, got {t.channels!r}")


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
    """Inception-style random-resized crop of the full image (Szegedy et al., 2015), sampled
    as torchvision/timm do, resized to ``size x size``, flipped with probability 1/2."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "area"
    flip: bool = True
    channels: int = 3
    decoder: str = "libjpeg-turbo"    # JPEG library (decode.DECODERS)
    dct: bool = True  # decode downscaled when the crop is >= 2x the output

    def __post_init__(self):
        _check_common(self)
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandomResizedCrop: scale must satisfy 0 < lo <= hi <= 1, got "
                             f"{self.scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must satisfy 0 < lo <= hi, got "
                             f"{self.ratio!r}")

    def __call__(self, data: bytes, rng: np.random.Generator | None = None,
                 path: str = "") -> np.ndarray:
        return _train_crop(self, data, rng, path,
                           lambda r, hw: sample_rrc(r, *hw, self.scale, self.ratio))


def _random_square(rng, hw, short, size, centre_square=False):
    """Box (original pixels) of a random ``size`` square of the image resized to shorter
    side ``short`` (within its centre ``short x short`` square when ``centre_square``)."""
    height, width = hw
    rh, rw = shorter_side_size(height, width, short)
    y0 = x0 = 0
    span_h, span_w = rh, rw
    if centre_square:
        y0, x0 = (rh - short) // 2, (rw - short) // 2
        span_h = span_w = short
    top = y0 + int(rng.integers(0, span_h - size + 1))
    left = x0 + int(rng.integers(0, span_w - size + 1))
    sy, sx = rh / height, rw / width
    return top / sy, left / sx, size / sy, size / sx


@dataclasses.dataclass(frozen=True)
class ScaleJitter:
    """Scale jittering (Simonyan & Zisserman, 2015; He et al., 2016): the shorter side is
    resized to an integer drawn uniformly from ``[s_min, s_max]``, a random ``size x size``
    crop is taken and flipped with probability 1/2."""

    size: int = 224
    s_min: int = 256
    s_max: int = 480
    interpolation: str = "area"
    flip: bool = True
    channels: int = 3
    decoder: str = "libjpeg-turbo"    # JPEG library (decode.DECODERS)
    dct: bool = True

    def __post_init__(self):
        _check_common(self)
        if not self.size <= self.s_min <= self.s_max:
            raise ValueError(f"ScaleJitter: need size <= s_min <= s_max, got size={self.size}, "
                             f"s_min={self.s_min}, s_max={self.s_max}")

    def __call__(self, data: bytes, rng: np.random.Generator | None = None,
                 path: str = "") -> np.ndarray:
        return _train_crop(self, data, rng, path, lambda r, hw: _random_square(
            r, hw, int(r.integers(self.s_min, self.s_max + 1)), self.size))


@dataclasses.dataclass(frozen=True)
class AlexNetCrop:
    """AlexNet's training crops (Krizhevsky et al., 2012): the shorter side resized to
    ``resize`` and the centre ``resize x resize`` square kept, as the paper prepared
    ImageNet, then a random ``size x size`` crop of it, flipped with probability 1/2."""

    size: int = 224
    resize: int = 256
    interpolation: str = "area"
    flip: bool = True
    channels: int = 3
    decoder: str = "libjpeg-turbo"    # JPEG library (decode.DECODERS)
    dct: bool = True

    def __post_init__(self):
        _check_common(self)
        if self.resize < self.size:
            raise ValueError(f"AlexNetCrop: resize ({self.resize}) must be >= size "
                             f"({self.size})")

    def __call__(self, data: bytes, rng: np.random.Generator | None = None,
                 path: str = "") -> np.ndarray:
        return _train_crop(self, data, rng, path, lambda r, hw: _random_square(
            r, hw, self.resize, self.size, centre_square=True))


@dataclasses.dataclass(frozen=True)
class CenterCropEval:
    """timm's evaluation transform (``transforms_imagenet_eval``): resize the shorter side to
    ``floor(size / crop_pct)`` with ``interpolation`` (the longer side truncated, as
    torchvision's ``Resize``), then crop the centre ``size x size``.  ``crop_mode='squash'``
    resizes both sides to ``floor(size / crop_pct)`` instead (timm's NFNet configs).
    Deterministic; ``rng`` is ignored.  Decodes at full size (faithful pixels)."""

    size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    crop_mode: str = "center"
    channels: int = 3
    decoder: str = "libjpeg-turbo"    # JPEG library (decode.DECODERS)

    def __post_init__(self):
        _check_common(self)
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"CenterCropEval: crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"CenterCropEval: crop_mode must be one of {CROP_MODES}, got "
                             f"{self.crop_mode!r}")

    @property
    def scale_size(self) -> int:
        return math.floor(self.size / self.crop_pct)

    def __call__(self, data: bytes, rng: np.random.Generator | None = None,
                 path: str = "") -> np.ndarray:
        img = _decode.decode(_bytes(data), self.channels, None, path, self.decoder)
        s = self.scale_size
        if self.crop_mode == "squash":
            hw = (s, s)
        else:
            hw = shorter_side_size(img.shape[0], img.shape[1], s)
        img = _decode.resize(img, hw, self.interpolation)
        top = round((hw[0] - self.size) / 2.0)
        left = round((hw[1] - self.size) / 2.0)
        return np.ascontiguousarray(img[top:top + self.size, left:left + self.size])


# ---------------------------------------------------------------------------------------
# Factories from the config
# ---------------------------------------------------------------------------------------

def _model_input(model_name, input_size):
    from jaxvision.registry import model_cfg  # the data package does not need models otherwise
    cfg = model_cfg(model_name)
    h, w, c = cfg["input_size"] if input_size is None else input_size
    if h != w:
        raise ValueError(f"the host transforms make square images; {model_name} takes {h}x{w}")
    return cfg, int(h), int(c)


def train_transform(ds, model_name: str, input_size=None):
    """The training transform ``dataset.train_transform`` names, for ``model_name``'s input.

    ``ds`` is the config's ``dataset`` section (keys: ``train_transform``, ``rrc_scale``,
    ``rrc_ratio``, ``scale_jitter``, ``train_interpolation``, ``flip``, ``channels``).
    ``input_size=(H, W, C)`` overrides the model's.
    """
    _, size, c = _model_input(model_name, input_size)
    channels = int(ds.get("channels", 0) or c)
    name = ds.get("train_transform", "random_resized_crop")
    interp = ds.get("train_interpolation", "area") or "area"
    flip = bool(ds.get("flip", True))
    decoder = ds.get("decoder", "libjpeg-turbo")
    if name == "random_resized_crop":
        return RandomResizedCrop(size, tuple(ds.get("rrc_scale", (0.08, 1.0))),
                                 tuple(ds.get("rrc_ratio", (3 / 4, 4 / 3))), interp, flip,
                                 channels, decoder)
    if name == "scale_jitter":
        s_min, s_max = (int(v) for v in ds.get("scale_jitter", (256, 480)))
        return ScaleJitter(size, s_min, s_max, interp, flip, channels, decoder)
    if name == "alexnet":
        return AlexNetCrop(size, round(size * 256 / 224), interp, flip, channels, decoder)
    if name == "center":  # no augmentation: the eval transform
        return eval_transform(ds, model_name, input_size)
    raise ValueError(f"dataset.train_transform must be one of {TRAIN_TRANSFORMS}, got {name!r}")


def eval_transform(ds, model_name: str, input_size=None) -> CenterCropEval:
    """The evaluation transform: the model's ``crop_pct``, ``interpolation`` and
    ``crop_mode`` (``model_cfg``) unless ``dataset.crop_pct`` / ``dataset.interpolation``
    override them."""
    cfg, size, c = _model_input(model_name, input_size)
    ds = ds if ds is not None else {}
    crop_pct = float(ds.get("crop_pct", 0.0) or cfg["crop_pct"])
    interp = ds.get("interpolation", "") or cfg.get("interpolation", "bilinear")
    channels = int(ds.get("channels", 0) or c)
    return CenterCropEval(size, crop_pct, interp, cfg.get("crop_mode", "center"), channels,
                          ds.get("decoder", "libjpeg-turbo"))


def eval_image(path_or_bytes, model_name: str) -> np.ndarray:
    """The uint8 ``(H, W, C)`` image ``model_name`` is evaluated on (before normalisation):
    the file (a path, or its encoded bytes) through the model's eval transform, as timm's
    eval transform for the same model."""
    path = ""
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path = os.fspath(path_or_bytes)
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = path_or_bytes
    return eval_transform(None, model_name)(data, None, path)
