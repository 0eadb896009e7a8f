"""Evaluation-time views of a batch: centre crops, ten-crop, flip TTA, multi-scale.

All functions take ``images`` of shape ``(B, H, W, C)`` (any float dtype; resizing ones
compute in float32 and return the input dtype) and are jit-able; sizes are static Python
ints.  Crop offsets follow torchvision (``round((H - h) / 2)`` for the centre) so views
match torchvision's ``CenterCrop``/``TenCrop`` pixel for pixel; resizing uses
``jax.image.resize`` with antialiasing, which is close to but not bit-identical with
torchvision/PIL resampling.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp


def _pair(name: str, size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"{name}: size must be a positive int or an (h, w) pair, got {size!r}")
    return int(size[0]), int(size[1])


def _check_images(name: str, images):
    if getattr(images, "ndim", None) != 4:
        raise ValueError(f"{name}: expected images of shape (B, H, W, C), got shape "
                         f"{getattr(images, 'shape', None)}")


def _check_crop_pct(name: str, crop_pct):
    if not isinstance(crop_pct, (int, float)) or isinstance(crop_pct, bool) \
            or not 0 < crop_pct <= 1:
        raise ValueError(f"{name}: crop_pct must be in (0, 1], got {crop_pct!r}")


def _crop(images, top: int, left: int, h: int, w: int):
    return images[:, top:top + h, left:left + w, :]


def _center_crop_to(name: str, images, size):
    th, tw = _pair(name, size)
    _, h, w, _ = images.shape
    if th > h or tw > w:
        raise ValueError(f"{name}: crop {th}x{tw} larger than the images {h}x{w}")
    return _crop(images, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0)), th, tw)


def center_crop(images, crop_pct: float = 0.875, *, size=None):
    """Centre crop keeping ``crop_pct`` of each side (``round(H * crop_pct)`` rows), or
    exactly ``size`` (int or (h, w)) when given."""
    _check_images("center_crop", images)
    if size is None:
        _check_crop_pct("center_crop", crop_pct)
        _, h, w, _ = images.shape
        size = (max(1, int(round(h * crop_pct))), max(1, int(round(w * crop_pct))))
    return _center_crop_to("center_crop", images, size)


def _resize_shorter(images, short: int, method: str):
    """Resize so the shorter side is ``short``; the longer side is
    ``int(short * long / short_in)`` as in torchvision's ``Resize(int)``."""
    _, h, w, c = images.shape
    if h <= w:
        nh, nw = short, int(short * w / h)
    else:
        nh, nw = int(short * h / w), short
    if (nh, nw) == (h, w):
        return images
    out = jax.image.resize(images.astype(jnp.float32), (images.shape[0], nh, nw, c),
                           method=method, antialias=True)
    return out.astype(images.dtype)


def resize_center_crop(images, size, crop_pct: float = 0.875, method: str = "bilinear"):
    """timm's eval transform: resize the shorter side to ``floor(size / crop_pct)``, then
    centre crop ``size`` (int or (h, w); the shorter side uses ``max(h, w)``)."""
    _check_images("resize_center_crop", images)
    _check_crop_pct("resize_center_crop", crop_pct)
    th, tw = _pair("resize_center_crop", size)
    short = int(math.floor(max(th, tw) / crop_pct))
    resized = _resize_shorter(images, short, method)
    return _center_crop_to("resize_center_crop", resized, (th, tw))


def five_crop(images, size):
    """The four corner crops and the centre crop, ``(5, B, h, w, C)``, in torchvision's
    order: top-left, top-right, bottom-left, bottom-right, centre."""
    _check_images("five_crop", images)
    th, tw = _pair("five_crop", size)
    _, h, w, _ = images.shape
    if th > h or tw > w:
        raise ValueError(f"five_crop: crop {th}x{tw} larger than the images {h}x{w}")
    return jnp.stack([
        _crop(images, 0, 0, th, tw),
        _crop(images, 0, w - tw, th, tw),
        _crop(images, h - th, 0, th, tw),
        _crop(images, h - th, w - tw, th, tw),
        _center_crop_to("five_crop", images, (th, tw)),
    ])


def ten_crop(images, size):
    """Ten-crop evaluation (Krizhevsky et al., 2012): :func:`five_crop` of the images and
    of their horizontal mirror, ``(10, B, h, w, C)`` (torchvision ``TenCrop`` order)."""
    _check_images("ten_crop", images)
    return jnp.concatenate([five_crop(images, size), five_crop(images[:, :, ::-1], size)])


def flip_tta(images):
    """The images and their horizontal mirror, ``(2, B, H, W, C)``."""
    _check_images("flip_tta", images)
    return jnp.stack([images, images[:, :, ::-1]])


def shift_tta(images, pixels: int = 1):
    """The images and four copies translated by ``pixels`` up, down, left and right (the
    uncovered border repeats the edge row or column), ``(5, B, H, W, C)``: test-time
    augmentation for inputs where translation, not mirroring, is the invariance (digits)."""
    _check_images("shift_tta", images)
    if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 1:
        raise ValueError(f"shift_tta needs a positive whole number of pixels, got {pixels!r}")
    h, w = images.shape[1:3]
    p = pixels
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    offsets = ((p, p), (0, p), (2 * p, p), (p, 0), (p, 2 * p))  # (row, col) of each window
    return jnp.stack([padded[:, r:r + h, c:c + w] for r, c in offsets])


def multi_scale(images, sizes: Sequence[int], method: str = "bilinear") -> tuple:
    """Copies of the batch with the shorter side resized to each of ``sizes``, for VGG-style
    dense multi-scale evaluation (Simonyan & Zisserman, 2015: Q in {S - 32, S, S + 32}).

    Returns a tuple (shapes differ); a fully-convolutional model with global pooling is run
    on each and the predictions averaged with :func:`average_predictions`.
    """
    _check_images("multi_scale", images)
    if isinstance(sizes, int) or not sizes or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"multi_scale: sizes must be a non-empty sequence of positive ints, "
                         f"got {sizes!r}")
    return tuple(_resize_shorter(images, s, method) for s in sizes)


def average_predictions(logits_stack):
    """Mean of the softmax over the first axis: ``(V, B, K)`` logits (or a sequence of
    ``(B, K)``) -> ``(B, K)`` probabilities."""
    if isinstance(logits_stack, (list, tuple)):
        if not logits_stack:
            raise ValueError("average_predictions: got no predictions")
        logits_stack = jnp.stack(logits_stack)
    if logits_stack.ndim < 2:
        raise ValueError(f"average_predictions: expected (V, ..., K) logits, got shape "
                         f"{logits_stack.shape}")
    return jnp.mean(jax.nn.softmax(logits_stack.astype(jnp.float32), axis=-1), axis=0)
