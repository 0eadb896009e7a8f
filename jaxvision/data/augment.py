"""Training-time augmentations as pure, jit-able JAX functions.

Every op here is a *factory*: called with the paper's hyper-parameters it validates them
(at build time, never at trace time) and returns a pure function

* ``op(rng, images) -> images`` for per-image augmentations, or
* ``op(rng, images, targets) -> (images, targets)`` for the batch-mixing ops
  (``mixup``, ``cutmix``).

``images`` is a float batch ``(B, H, W, C)`` in [0, 1] pixel scale (mean/std
normalisation comes later, in the trainer) and ``targets`` are soft labels ``(B, K)``.
The functions are vectorised over the batch (a ``vmap`` of a per-image function fed with
that image's row of one batched uniform draw), deterministic in ``rng`` and keep the
dtype; all ops keep the shape, except the cropping ones whose output size is their
``size`` argument.

``build_augment`` / ``build_mix`` turn a config string such as
``"random_crop(32, pad=4)|flip_lr|random_erasing(p=0.5)"`` into one such function.
"""
from __future__ import annotations

import ast
import difflib
import functools
import inspect
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Augment = Callable[[jax.Array, jax.Array], jax.Array]
Mix = Callable[[jax.Array, jax.Array, jax.Array], "tuple[jax.Array, jax.Array]"]

# Eigen-decomposition of the RGB pixel covariance of ImageNet in [0, 1] pixel scale, as
# used for AlexNet-style lighting noise by fb.resnet.torch and most later ImageNet
# pipelines.  Columns of IMAGENET_EIGVEC are the eigenvectors (R, G, B rows), sorted by
# decreasing eigenvalue.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


# -------------------------------------------------------------------------------------------
# Argument validation (build time)
# -------------------------------------------------------------------------------------------

def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_prob(op: str, name: str, v) -> float:
    if not _is_number(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{op}: {name} must be a probability in [0, 1], got {v!r}")
    return float(v)


def _check_positive(op: str, name: str, v, *, integer: bool = False, allow_zero: bool = False):
    ok = _is_number(v) and (v >= 0 if allow_zero else v > 0)
    if integer:
        ok = ok and float(v) == int(v)
    if not ok:
        kind = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{op}: {name} must be a {kind} {bound}, got {v!r}")
    return int(v) if integer else float(v)


def _check_size(op: str, name: str, v) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints."""
    if _is_number(v):
        v = (v, v)
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(_is_number(s) and float(s) == int(s) and s > 0 for s in v)):
        raise ValueError(f"{op}: {name} must be a positive int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def _check_range(op: str, name: str, v, lo_bound: float, hi_bound: float) -> tuple[float, float]:
    if (not isinstance(v, (tuple, list)) or len(v) != 2 or not all(_is_number(s) for s in v)
            or not lo_bound <= v[0] <= v[1] <= hi_bound or v[1] <= 0):
        raise ValueError(f"{op}: {name} must be a (low, high) pair with "
                         f"{lo_bound} <= low <= high <= {hi_bound}, got {v!r}")
    return float(v[0]), float(v[1])


def _check_fill(op: str, name: str, v, allowed_words: Sequence[str]):
    if isinstance(v, str):
        if v not in allowed_words:
            raise ValueError(f"{op}: {name} must be one of {list(allowed_words)}, a number "
                             f"or a per-channel tuple, got {v!r}")
        return v
    if _is_number(v):
        return float(v)
    if isinstance(v, (tuple, list)) and v and all(_is_number(s) for s in v):
        return tuple(float(s) for s in v)
    raise ValueError(f"{op}: {name} must be one of {list(allowed_words)}, a number or a "
                     f"per-channel tuple, got {v!r}")


def _check_method(op: str, method):
    methods = ("bilinear", "linear", "bicubic", "cubic", "lanczos3", "lanczos5")
    if method not in methods:
        raise ValueError(f"{op}: method must be one of {list(methods)}, got {method!r}")


# -------------------------------------------------------------------------------------------
# Shared helpers (trace time)
# -------------------------------------------------------------------------------------------

def _check_images(op: str, images, *, need_float: bool = True):
    if getattr(images, "ndim", None) != 4:
        raise ValueError(f"{op}: expected images of shape (B, H, W, C), got shape "
                         f"{getattr(images, 'shape', None)}")
    if need_float and not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{op}: expected float images in [0, 1], got dtype {images.dtype}")


def _per_image(fn, rng, images, n: int):
    """Apply ``fn(u, image)`` to every image, ``u`` being its row of
    ``uniform(rng, (B, n))``.

    One batched draw instead of a key per image and per variable keeps the traced
    program (and its compile time) small; ops derive all their randomness from ``u``.
    """
    u = jax.random.uniform(rng, (images.shape[0], n), jnp.float32)
    return jax.vmap(fn)(u, images)


def _int_below(u, n):
    """A uniform integer in {0, ..., n - 1} from ``u ~ U[0, 1)`` (``n`` may be traced)."""
    n = jnp.asarray(n, jnp.int32)
    return jnp.clip(jnp.floor(u * n).astype(jnp.int32), 0, n - 1)


def _fill_values(fill, noise, img):
    """The replacement pixels for erasing/cutout, broadcastable to ``img`` (H, W, C);
    ``noise`` is the caller's per-pixel U(0, 1) draw, used for ``fill='random'``."""
    if fill == "random":
        return noise
    if fill == "mean":
        return jnp.mean(img, axis=(0, 1), keepdims=True)
    fill = jnp.asarray(fill, jnp.float32)
    if fill.ndim == 1 and fill.shape[0] != img.shape[-1]:
        raise ValueError(f"fill value has {fill.shape[0]} channels, images have "
                         f"{img.shape[-1]}")
    return fill


def _box_mask(h: int, w: int, y0, y1, x0, x1):
    """(h, w, 1) boolean mask of rows [y0, y1) and columns [x0, x1)."""
    yy = jnp.arange(h)[:, None, None]
    xx = jnp.arange(w)[None, :, None]
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


# -------------------------------------------------------------------------------------------
# Geometric ops
# -------------------------------------------------------------------------------------------

def _random_crop(rng, images, *, size, pad, mode):
    _check_images("random_crop", images, need_float=False)
    (py, px), (th, tw) = pad, (size or images.shape[1:3])
    if py or px:
        images = jnp.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode=mode)
    _, h, w, c = images.shape
    if th > h or tw > w:
        raise ValueError(f"random_crop: crop {th}x{tw} larger than the padded image {h}x{w}")

    def one(u, img):
        y, x = _int_below(u[0], h - th + 1), _int_below(u[1], w - tw + 1)
        return lax.dynamic_slice(img, (y, x, 0), (th, tw, c))

    return _per_image(one, rng, images, 2)


def random_crop(size=None, pad=4, mode="constant") -> Augment:
    """Pad by ``pad`` pixels, then crop a random ``size`` window (Krizhevsky et al., 2012;
    the CIFAR "pad 4 and crop 32" of Lin et al., 2014 and He et al., 2016).  ``size=None``
    crops back to the size of the input (a random shift of up to ``pad`` pixels).

    Offsets are uniform integers, so every crop lies inside the padded image.
    ``mode`` is the padding: 'constant' (zeros) or 'reflect'.
    """
    size = None if size is None else _check_size("random_crop", "size", size)
    pad_pair = (pad, pad) if _is_number(pad) else pad
    if (not isinstance(pad_pair, (tuple, list)) or len(pad_pair) != 2
            or not all(_is_number(q) and q >= 0 and float(q) == int(q) for q in pad_pair)):
        raise ValueError(f"random_crop: pad must be an int >= 0 or a (py, px) pair, got {pad!r}")
    pad = (int(pad_pair[0]), int(pad_pair[1]))
    if mode not in ("constant", "reflect"):
        raise ValueError(f"random_crop: mode must be 'constant' or 'reflect', got {mode!r}")
    return functools.partial(_random_crop, size=size, pad=pad, mode=mode)


def _flip_lr(rng, images, *, p):
    _check_images("flip_lr", images, need_float=False)
    flip = jax.random.bernoulli(rng, p, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def flip_lr(p=0.5) -> Augment:
    """Horizontal reflection with probability ``p`` per image (Krizhevsky et al., 2012)."""
    return functools.partial(_flip_lr, p=_check_prob("flip_lr", "p", p))


def _scale_jitter(rng, images, *, s_min, s_max, size, method):
    _check_images("scale_jitter", images)
    _, h, w, c = images.shape
    th, tw = size
    short = min(h, w)

    def one(u, img):
        s = (s_min + _int_below(u[0], s_max - s_min + 1)).astype(jnp.float32)
        scale = s / short
        # Rescaled image is (h * scale, w * scale); its short side is S >= size, so
        # integer offsets below keep the crop inside it.
        y = _int_below(u[1], jnp.floor(h * scale).astype(jnp.int32) - th + 1)
        x = _int_below(u[2], jnp.floor(w * scale).astype(jnp.int32) - tw + 1)
        return jax.image.scale_and_translate(
            img.astype(jnp.float32), (th, tw, c), (0, 1), jnp.stack([scale, scale]),
            -jnp.stack([y, x]).astype(jnp.float32), method=method, antialias=True)

    return _per_image(one, rng, images, 3).astype(images.dtype)


def scale_jitter(s_min=256, s_max=512, size=224, method="bilinear") -> Augment:
    """VGG scale jittering (Simonyan & Zisserman, 2015): isotropically rescale each image so
    its shorter side is ``S ~ U{s_min, ..., s_max}`` (an integer), then take a random
    ``size`` crop.

    On device the output shape must be static, so the rescale and the crop are one
    ``jax.image.scale_and_translate`` call: scale ``S / min(H, W)`` on both axes and
    translation ``-offset``, where the integer offset is uniform over the crops that fit
    inside the rescaled image (``floor(H * scale)`` x ``floor(W * scale)``).  The result
    equals resizing the whole image by exactly that factor (antialiased ``method``
    filter) and slicing the window, without materialising the large image.
    """
    s_min = _check_positive("scale_jitter", "s_min", s_min, integer=True)
    s_max = _check_positive("scale_jitter", "s_max", s_max, integer=True)
    size = _check_size("scale_jitter", "size", size)
    if s_min > s_max:
        raise ValueError(f"scale_jitter: need s_min <= s_max, got {s_min} > {s_max}")
    if max(size) > s_min:
        raise ValueError(f"scale_jitter: crop size {size} exceeds s_min={s_min}; the crop "
                         "must fit in the rescaled image")
    _check_method("scale_jitter", method)
    return functools.partial(_scale_jitter, s_min=s_min, s_max=s_max, size=size,
                             method=method)


def _random_resized_crop(rng, images, *, size, scale, ratio, attempts, method):
    _check_images("random_resized_crop", images)
    _, h, w, c = images.shape
    th, tw = size
    area = float(h * w)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def one(u, img):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
        aspect = jnp.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0])
                         * u[attempts:2 * attempts])
        cw = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
        ch = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
        ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = jnp.argmax(ok)
        # torchvision's fallback when no attempt fits: the whole image, clamped to the
        # ratio range, centred.
        in_ratio = w / h
        if in_ratio < ratio[0]:
            fw, fh = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            fh, fw = h, int(round(h * ratio[1]))
        else:
            fw, fh = w, h
        any_ok = jnp.any(ok)
        ch = jnp.where(any_ok, ch[first], fh)
        cw = jnp.where(any_ok, cw[first], fw)
        y = jnp.where(any_ok, _int_below(u[-2], h - ch + 1), (h - fh) // 2)
        x = jnp.where(any_ok, _int_below(u[-1], w - cw + 1), (w - fw) // 2)
        sy, sx = th / ch.astype(jnp.float32), tw / cw.astype(jnp.float32)
        return jax.image.scale_and_translate(
            img.astype(jnp.float32), (th, tw, c), (0, 1), jnp.stack([sy, sx]),
            -jnp.stack([y * sy, x * sx]), method=method, antialias=True)

    return _per_image(one, rng, images, 2 * attempts + 2).astype(images.dtype)


def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10,
                        method="bilinear") -> Augment:
    """Inception-style crop (Szegedy et al., 2015): a box of ``scale`` x the image area
    and log-uniform aspect ``ratio`` (width / height), resized to ``size``.

    Up to ``attempts`` candidate boxes are drawn at once and the first that fits is used
    (torchvision also tries 10); if none fits, the centred largest box within ``ratio``.
    """
    size = _check_size("random_resized_crop", "size", size)
    scale = _check_range("random_resized_crop", "scale", scale, 0.0, 1.0)
    ratio = _check_range("random_resized_crop", "ratio", ratio, 1e-6, 1e6)
    attempts = _check_positive("random_resized_crop", "attempts", attempts, integer=True)
    _check_method("random_resized_crop", method)
    return functools.partial(_random_resized_crop, size=size, scale=scale, ratio=ratio,
                             attempts=attempts, method=method)


# -------------------------------------------------------------------------------------------
# Photometric ops
# -------------------------------------------------------------------------------------------

def _pca_lighting(rng, images, *, std, eigval, eigvec):
    _check_images("pca_lighting", images)
    if images.shape[-1] != eigvec.shape[0]:
        raise ValueError(f"pca_lighting: eigvec is for {eigvec.shape[0]} channels, images "
                         f"have {images.shape[-1]}")
    alpha = std * jax.random.normal(rng, (images.shape[0], eigval.shape[0]), jnp.float32)
    delta = (alpha * eigval) @ eigvec.T                     # (B, C): eigvec @ (alpha * eigval)
    return (images.astype(jnp.float32) + delta[:, None, None, :]).astype(images.dtype)


def pca_lighting(std=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC) -> Augment:
    """AlexNet's colour augmentation (Krizhevsky et al., 2012): add
    ``eigvec @ (alpha * eigval)`` to every pixel, one ``alpha ~ N(0, std^2)`` vector per
    image (drawn as ``std * jax.random.normal(rng, (B, k))``).

    ``eigvec`` columns are eigenvectors of the RGB covariance and ``eigval`` their
    eigenvalues; defaults are the ImageNet values commonly used in [0, 1] pixel scale
    (``IMAGENET_EIGVAL``/``IMAGENET_EIGVEC``).  Use :func:`rgb_pca` for other data.
    The result is not clipped, as in the paper.
    """
    std = _check_positive("pca_lighting", "std", std, allow_zero=True)
    eigval_a = np.asarray(eigval, np.float32)
    eigvec_a = np.asarray(eigvec, np.float32)
    if (eigval_a.ndim != 1 or eigvec_a.ndim != 2 or eigvec_a.shape[1] != eigval_a.shape[0]
            or not np.all(np.isfinite(eigvec_a)) or not np.all(np.isfinite(eigval_a))):
        raise ValueError(f"pca_lighting: need eigval (k,) and eigvec (C, k), got shapes "
                         f"{eigval_a.shape} and {eigvec_a.shape}")
    return functools.partial(_pca_lighting, std=std, eigval=jnp.asarray(eigval_a),
                             eigvec=jnp.asarray(eigvec_a))


def rgb_pca(images) -> tuple[jax.Array, jax.Array]:
    """Eigen-decomposition of the channel covariance of ``images`` (..., C) for
    :func:`pca_lighting`: returns ``(eigval (C,), eigvec (C, C))`` with eigenvectors as
    columns, sorted by decreasing eigenvalue (the paper's ``lambda_i`` and ``p_i``)."""
    pixels = jnp.reshape(jnp.asarray(images, jnp.float32), (-1, jnp.shape(images)[-1]))
    centred = pixels - jnp.mean(pixels, axis=0)
    cov = centred.T @ centred / (pixels.shape[0] - 1)
    eigval, eigvec = jnp.linalg.eigh(cov)                   # ascending
    return eigval[::-1], eigvec[:, ::-1]


# -------------------------------------------------------------------------------------------
# Occlusion ops
# -------------------------------------------------------------------------------------------

def _cutout(rng, images, *, size, p, value):
    _check_images("cutout", images)
    _, h, w, _ = images.shape
    sh, sw = size

    def one(u, img):
        cy, cx = _int_below(u[1], h), _int_below(u[2], w)
        y0, x0 = cy - sh // 2, cx - sw // 2
        mask = _box_mask(h, w, y0, y0 + sh, x0, x0 + sw) & (u[0] < p)
        fill = _fill_values(value, None, img)
        return jnp.where(mask, fill, img)

    return _per_image(one, rng, images, 3).astype(images.dtype)


def cutout(size=16, p=1.0, value=0.0) -> Augment:
    """Cutout (DeVries & Taylor, 2017): with probability ``p`` set a ``size`` x ``size``
    square to ``value``; its centre is uniform over all pixels and it is clipped at the
    borders (so near an edge less than size^2 pixels change).

    The reference code cut out after normalisation, where 0 is the dataset mean; here
    images are still in [0, 1], so pass the dataset mean as ``value`` (a number or
    per-channel tuple, or 'mean' for each image's own mean) to reproduce that exactly.
    """
    size = _check_size("cutout", "size", size)
    p = _check_prob("cutout", "p", p)
    value = _check_fill("cutout", "value", value, ("mean",))
    return functools.partial(_cutout, size=size, p=p, value=value)


def _random_erasing(rng, images, *, p, s_l, s_h, r_1, value, attempts):
    _check_images("random_erasing", images)
    _, h, w, _ = images.shape
    area = float(h * w)

    def one(u, img, noise):
        target = area * (s_l + (s_h - s_l) * u[:attempts])
        aspect = r_1 + (1.0 / r_1 - r_1) * u[attempts:2 * attempts]
        eh = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
        ew = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
        # A candidate is accepted only if the *pixel* box fits and still satisfies the
        # area and aspect bounds after rounding, so erased boxes obey them exactly.
        box = (eh * ew).astype(jnp.float32)
        ok = ((eh >= 1) & (ew >= 1) & (eh <= h) & (ew <= w)
              & (box >= s_l * area) & (box <= s_h * area)
              & (eh >= r_1 * ew) & (r_1 * eh <= ew))
        first = jnp.argmax(ok)
        eh, ew = eh[first], ew[first]
        y0 = _int_below(u[-2], jnp.maximum(h - eh + 1, 1))
        x0 = _int_below(u[-1], jnp.maximum(w - ew + 1, 1))
        erase = (u[-3] < p) & jnp.any(ok)
        mask = _box_mask(h, w, y0, y0 + eh, x0, x0 + ew) & erase
        return jnp.where(mask, _fill_values(value, noise, img), img)

    k_box, k_noise = jax.random.split(rng)
    # Algorithm 1 of Zhong et al. draws every erased pixel from Rand(0, 255): U(0, 1) here.
    noise = (jax.random.uniform(k_noise, images.shape, jnp.float32) if value == "random"
             else jnp.zeros((images.shape[0],), jnp.float32))
    u = jax.random.uniform(k_box, (images.shape[0], 2 * attempts + 3), jnp.float32)
    return jax.vmap(one)(u, images, noise).astype(images.dtype)


def random_erasing(p=0.5, s_l=0.02, s_h=0.4, r_1=0.3, value="random", attempts=10) -> Augment:
    """Random Erasing (Zhong et al., 2020, Algorithm 1).

    With probability ``p`` an image gets one box of area ``S_e ~ U(s_l, s_h) * H * W`` and
    aspect ``r_e = H_e / W_e ~ U(r_1, 1 / r_1)`` filled with ``value``: 'random' (every
    pixel ~ U(0, 1), the paper's Rand(0, 255) in [0, 1] scale), a number, a per-channel
    tuple, or 'mean' (the image's per-channel mean).

    The paper retries until the box fits.  On device ``attempts`` candidates are drawn at
    once; ``H_e``, ``W_e`` are rounded to whole pixels and the first candidate that fits
    the image *and* still has area in ``[s_l, s_h] * H * W`` and aspect in
    ``[r_1, 1 / r_1]`` is used, placed uniformly among the positions where it fits (as in
    the authors' code).  If no candidate qualifies the image is left unchanged.
    """
    p = _check_prob("random_erasing", "p", p)
    s_l = _check_prob("random_erasing", "s_l", s_l)
    s_h = _check_prob("random_erasing", "s_h", s_h)
    if not s_l < s_h:
        raise ValueError(f"random_erasing: need s_l < s_h, got s_l={s_l}, s_h={s_h}")
    if not _is_number(r_1) or not 0 < r_1 <= 1:
        raise ValueError(f"random_erasing: r_1 must be in (0, 1], got {r_1!r}")
    value = _check_fill("random_erasing", "value", value, ("random", "mean"))
    attempts = _check_positive("random_erasing", "attempts", attempts, integer=True)
    return functools.partial(_random_erasing, p=p, s_l=s_l, s_h=s_h, r_1=float(r_1),
                             value=value, attempts=attempts)


# -------------------------------------------------------------------------------------------
# RandAugment
# -------------------------------------------------------------------------------------------

RANDAUGMENT_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color",
                   "posterize", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                   "translate_x", "translate_y")

_GRAY = (0.299, 0.587, 0.114)                               # ITU-R 601 luma, as PIL's "L"


def _gray(img):
    if img.shape[-1] == 3:
        return img @ jnp.asarray(_GRAY, img.dtype)
    return jnp.mean(img, axis=-1)


def _blend(degenerate, img, factor):
    """PIL ImageEnhance: ``degenerate + factor * (img - degenerate)``, clipped."""
    return jnp.clip(degenerate + factor * (img - degenerate), 0.0, 1.0)


def _affine(img, matrix, fill=0.5):
    """Warp ``img`` (H, W, C): output pixel (y, x) samples the input at
    ``matrix @ (y, x, 1)`` (bilinear, ``fill`` outside), like PIL's ``Image.transform``."""
    h, w, c = img.shape
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    src_y = matrix[0, 0] * yy + matrix[0, 1] * xx + matrix[0, 2]
    src_x = matrix[1, 0] * yy + matrix[1, 1] * xx + matrix[1, 2]
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(  # noqa: E731
        ch, [src_y, src_x], order=1, mode="constant", cval=fill)
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(img)


def _equalize(img):
    """PIL ``ImageOps.equalize`` per channel on the 8-bit quantised image."""
    def channel(x):
        q = jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)
        hist = jnp.zeros(256, jnp.int32).at[q.ravel()].add(1)
        step = (q.size - hist[jnp.max(q)]) // 255
        lut = (jnp.cumsum(hist) - hist + step // 2) // jnp.maximum(step, 1)
        out = jnp.clip(lut, 0, 255)[q].astype(jnp.float32) / 255.0
        return jnp.where(step > 0, out, x)
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(img)


def _sharpness_degenerate(img):
    """PIL's SMOOTH filter (3x3, centre weight 5, total 13); border pixels unchanged."""
    h, w, _ = img.shape
    padded = jnp.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    total = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    smooth = (total + 4.0 * img) / 13.0
    interior = _box_mask(h, w, 1, h - 1, 1, w - 1)
    return jnp.where(interior, smooth, img)


def randaugment_ops(frac: float) -> dict:
    """The RandAugment ops at magnitude fraction ``frac = m / m_max`` in [0, 1]:
    ``{name: f(img (H, W, C), sign) -> img}``, ``sign`` = +-1 (the direction of signed
    ops)."""
    angle = math.radians(30.0 * frac)
    shear = 0.3 * frac
    enhance = 0.9 * frac
    threshold = 1.0 - frac                                   # stronger with magnitude
    bits = 8 - int(4 * frac)                                 # 8 bits at M=0, 4 at M=max
    keep = 256 - 2 ** (8 - bits)

    def rotate(img, s):
        cy, cx = (img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0
        cos, sin = jnp.cos(s * angle), jnp.sin(s * angle)
        m = jnp.array([[cos, -sin, cy - cos * cy + sin * cx],
                       [sin, cos, cx - sin * cy - cos * cx]])
        return _affine(img, m)

    def autocontrast(img):
        lo = jnp.min(img, axis=(0, 1), keepdims=True)
        hi = jnp.max(img, axis=(0, 1), keepdims=True)
        span = hi - lo
        return jnp.where(span > 0, (img - lo) / jnp.where(span > 0, span, 1.0), img)

    def posterize(img):
        q = jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.int32)
        return (q & keep).astype(jnp.float32) / 255.0

    def contrast(img, s):
        mean = jnp.mean(_gray(img))
        return _blend(mean, img, 1.0 + s * enhance)

    def affine(rows):
        # ``rows`` give the source (y, x) of output pixel (y, x, 1), like PIL's affine data.
        return lambda img, s: _affine(img, jnp.array(rows(s)))

    ops = {
        "identity": lambda img, s: img,
        "autocontrast": lambda img, s: autocontrast(img),
        "equalize": lambda img, s: _equalize(img),
        "rotate": rotate,
        "solarize": lambda img, s: jnp.where(img >= threshold, 1.0 - img, img),
        "color": lambda img, s: _blend(_gray(img)[..., None], img, 1.0 + s * enhance),
        "posterize": lambda img, s: posterize(img),
        "contrast": contrast,
        "brightness": lambda img, s: _blend(jnp.zeros_like(img), img, 1.0 + s * enhance),
        "sharpness": lambda img, s: _blend(_sharpness_degenerate(img), img, 1.0 + s * enhance),
        "shear_x": affine(lambda s: [[1.0, 0.0, 0.0], [s * shear, 1.0, 0.0]]),
        "shear_y": affine(lambda s: [[1.0, s * shear, 0.0], [0.0, 1.0, 0.0]]),
        # Shifts are a fraction of the side they move along.
        "translate_x": lambda img, s: _affine(img, jnp.array(
            [[1.0, 0.0, 0.0], [0.0, 1.0, s * 0.45 * frac * img.shape[1]]])),
        "translate_y": lambda img, s: _affine(img, jnp.array(
            [[1.0, 0.0, s * 0.45 * frac * img.shape[0]], [0.0, 1.0, 0.0]])),
    }
    return ops


def _randaugment(rng, images, *, n, frac):
    _check_images("randaugment", images)
    table = randaugment_ops(frac)
    branches = [table[name] for name in RANDAUGMENT_OPS]

    def one(u, img):
        img = img.astype(jnp.float32)
        for i in range(n):
            index = _int_below(u[2 * i], len(branches))
            sign = jnp.where(u[2 * i + 1] < 0.5, 1.0, -1.0)
            img = lax.switch(index, branches, img, sign)
        return img

    return _per_image(one, rng, images, 2 * n).astype(images.dtype)


def randaugment(n=2, m=9, m_max=10) -> Augment:
    """RandAugment (Cubuk et al., 2020): apply ``n`` ops drawn uniformly (with
    replacement) from ``RANDAUGMENT_OPS``, all at the same magnitude ``m``.

    ``m`` is on a 0..``m_max`` scale; ``m_max=10`` follows the reference TF and timm
    implementations (``rand-m9-n2``), pass ``m_max=30`` for the paper's 0..30 scale.  At
    ``m = m_max``: rotate +-30 deg, shear +-0.3, translate +-45% of the side, colour /
    contrast / brightness / sharpness factor 1 +- 0.9, solarize threshold 0,
    posterize to 4 bits; signed ops pick the sign at random, and every magnitude grows with
    ``m`` (timm's "increasing" variants).  Each op is always applied, as in the paper.
    Geometric ops sample bilinearly with grey (0.5) fill.  Under ``vmap`` the
    ``lax.switch`` evaluates all branches and selects one per image.
    """
    n = _check_positive("randaugment", "n", n, integer=True, allow_zero=True)
    m_max = _check_positive("randaugment", "m_max", m_max)
    if not _is_number(m) or not 0 <= m <= m_max:
        raise ValueError(f"randaugment: m must be in [0, m_max={m_max}], got {m!r}")
    return functools.partial(_randaugment, n=n, frac=float(m) / m_max)


# -------------------------------------------------------------------------------------------
# Batch-mixing ops
# -------------------------------------------------------------------------------------------

def _check_mix_inputs(op, images, targets):
    _check_images(op, images)
    if getattr(targets, "ndim", None) != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"{op}: expected soft targets (B, K) with B={images.shape[0]}, got "
                         f"shape {getattr(targets, 'shape', None)}")
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        raise ValueError(f"{op}: targets must be float soft labels, got {targets.dtype}")


def _mixup(rng, images, targets, *, alpha):
    _check_mix_inputs("mixup", images, targets)
    lam = jax.random.beta(rng, alpha, alpha)
    x = lam * images.astype(jnp.float32) + (1 - lam) * images[::-1].astype(jnp.float32)
    y = lam * targets.astype(jnp.float32) + (1 - lam) * targets[::-1].astype(jnp.float32)
    return x.astype(images.dtype), y.astype(targets.dtype)


def mixup(alpha=0.2) -> Mix:
    """mixup (Zhang et al., 2018): ``lambda ~ Beta(alpha, alpha)``, one per batch, and
    ``x = lambda x_i + (1 - lambda) x_j``, same for the targets.  The partner ``j`` of
    example ``i`` is ``B - 1 - i`` (the batch reversed; the batch is already shuffled)."""
    return functools.partial(_mixup, alpha=_check_positive("mixup", "alpha", alpha))


def _cutmix(rng, images, targets, *, alpha):
    _check_mix_inputs("cutmix", images, targets)
    _, h, w, _ = images.shape
    kl, kc = jax.random.split(rng)
    lam = jax.random.beta(kl, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam)
    cut_h = (h * cut).astype(jnp.int32)
    cut_w = (w * cut).astype(jnp.int32)
    u = jax.random.uniform(kc, (2,))
    cy, cx = _int_below(u[0], h), _int_below(u[1], w)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    mask = _box_mask(h, w, y0, y1, x0, x1)[None]
    x = jnp.where(mask, images[::-1], images)
    # Labels follow the pixels actually pasted, after clipping at the borders.
    pasted = ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (h * w)
    y = (1 - pasted) * targets.astype(jnp.float32) + pasted * targets[::-1].astype(jnp.float32)
    return x, y.astype(targets.dtype)


def cutmix(alpha=1.0) -> Mix:
    """CutMix (Yun et al., 2019): ``lambda ~ Beta(alpha, alpha)``; a box of side ratios
    ``sqrt(1 - lambda)`` (so area ratio ``1 - lambda`` before clipping), centre uniform over
    the pixels, clipped at the borders, is pasted from the partner ``B - 1 - i``.  The
    targets are mixed by the exact fraction of pixels pasted after clipping.  One box per
    batch, as in the reference code."""
    return functools.partial(_cutmix, alpha=_check_positive("cutmix", "alpha", alpha))


# -------------------------------------------------------------------------------------------
# Spec parser
# -------------------------------------------------------------------------------------------

AUGMENTS = {
    "random_crop": random_crop,
    "flip_lr": flip_lr,
    "scale_jitter": scale_jitter,
    "random_resized_crop": random_resized_crop,
    "pca_lighting": pca_lighting,
    "cutout": cutout,
    "random_erasing": random_erasing,
    "randaugment": randaugment,
}
MIXES = {"mixup": mixup, "cutmix": cutmix}


def _split_top_level(spec: str) -> list[str]:
    """Split on '|' outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(spec):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    items.append(spec[start:])
    return items


def _parse_item(item: str) -> tuple[str, tuple, dict]:
    """``'name(1, k=2)'`` -> ``('name', (1,), {'k': 2})`` using literals only."""
    try:
        node = ast.parse(item.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse augmentation {item.strip()!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"cannot parse augmentation {item.strip()!r}: expected name or "
                         "name(arg, key=value, ...)")
    name = node.func.id

    def literal(arg_node, label):
        if isinstance(arg_node, ast.Starred):
            raise ValueError(f"{name}: *args are not supported")
        try:
            return ast.literal_eval(arg_node)
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"{name}: {label} is not a Python literal: "
                             f"{ast.unparse(arg_node)!r}") from None

    args = tuple(literal(a, f"argument {i + 1}") for i, a in enumerate(node.args))
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{name}: **kwargs are not supported")
        kwargs[kw.arg] = literal(kw.value, f"argument {kw.arg!r}")
    return name, args, kwargs


def _build(spec: str, table: dict, other: dict, what: str, other_builder: str) -> list:
    ops = []
    items = _split_top_level(spec)
    for item in items:
        if not item.strip():
            raise ValueError(f"empty op in {what} spec {spec!r}")
        name, args, kwargs = _parse_item(item)
        if name not in table:
            if name in other:
                raise ValueError(f"{name!r} is not {what}; pass it to {other_builder}")
            close = difflib.get_close_matches(name, list(table), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown {what} op {name!r}{hint} (known: {sorted(table)})")
        factory = table[name]
        sig = inspect.signature(factory)
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"{name}: {e}; accepted arguments: "
                             f"{', '.join(sig.parameters)}") from None
        ops.append(factory(*args, **kwargs))
    return ops


def build_augment(spec: str) -> Augment:
    """Parse ``"op1(args)|op2|..."`` into ``fn(rng, images) -> images`` applying the ops in
    order, each with its own key ``split(rng, n_ops)[i]``.  An empty spec is the identity.

    Arguments are Python literals (``random_crop(32, pad=4, mode='reflect')``); names and
    values are validated here, so a bad spec fails before anything is traced.
    """
    spec = (spec or "").strip()
    ops = _build(spec, AUGMENTS, MIXES, "an augmentation", "build_mix") if spec else []

    def augment(rng, images):
        if not ops:
            return images
        for key, op in zip(jax.random.split(rng, len(ops)), ops):
            images = op(key, images)
        return images

    augment.spec = spec
    return augment


def build_mix(spec: str) -> Optional[Mix]:
    """Parse ``"mixup(alpha=0.2)"`` or ``"cutmix(alpha=1.0)"`` into
    ``fn(rng, images, targets) -> (images, targets)``; ``""`` gives ``None``.

    Several ops joined by '|' (``"mixup(alpha=0.8)|cutmix(alpha=1.0)"``) pick one of them
    uniformly at random per batch, like timm's mixup/cutmix switch.
    """
    spec = (spec or "").strip()
    if not spec:
        return None
    ops = _build(spec, MIXES, AUGMENTS, "a mix", "build_augment")
    if len(ops) == 1:
        mix = ops[0]
    else:
        def mix(rng, images, targets):
            kc, ko = jax.random.split(rng)
            which = jax.random.randint(kc, (), 0, len(ops))
            branches = [functools.partial(op, ko) for op in ops]
            return lax.switch(which, branches, images, targets)
    mix.spec = spec
    return mix
