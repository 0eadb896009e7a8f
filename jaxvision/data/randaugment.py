"""RandAugment (Cubuk et al., 2020) as a pure, jit-able batch op: its 14 image ops at one
magnitude, chosen per image with ``lax.switch``.  Built by ``randaugment(n, m)`` or the spec
string ``"randaugment(2, 9)"`` (see :mod:`jaxvision.data.augment`)."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxvision.data.augment_util import (Augment, box_mask, check_images, check_positive,
                                         int_below, is_number, per_image)

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
    interior = box_mask(h, w, 1, h - 1, 1, w - 1)
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
    check_images("randaugment", images)
    table = randaugment_ops(frac)
    branches = [table[name] for name in RANDAUGMENT_OPS]

    def one(u, img):
        img = img.astype(jnp.float32)
        for i in range(n):
            index = int_below(u[2 * i], len(branches))
            sign = jnp.where(u[2 * i + 1] < 0.5, 1.0, -1.0)
            img = lax.switch(index, branches, img, sign)
        return img

    return per_image(one, rng, images, 2 * n).astype(images.dtype)


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
    n = check_positive("randaugment", "n", n, integer=True, allow_zero=True)
    m_max = check_positive("randaugment", "m_max", m_max)
    if not is_number(m) or not 0 <= m <= m_max:
        raise ValueError(f"randaugment: m must be in [0, m_max={m_max}], got {m!r}")
    return functools.partial(_randaugment, n=n, frac=float(m) / m_max)

