"""What the augmentation modules share: the op types, build-time argument checks that name
the op and the bad value, and the trace-time helpers that draw one batched uniform per image
(``per_image``) and turn it into integers, fills and boxes."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Augment = Callable[[jax.Array, jax.Array], jax.Array]
Mix = Callable[[jax.Array, jax.Array, jax.Array], "tuple[jax.Array, jax.Array]"]

# -------------------------------------------------------------------------------------------
# Argument validation (build time)
# -------------------------------------------------------------------------------------------

def is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_prob(op: str, name: str, v) -> float:
    if not is_number(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{op}: {name} must be a probability in [0, 1], got {v!r}")
    return float(v)


def check_positive(op: str, name: str, v, *, integer: bool = False, allow_zero: bool = False):
    ok = is_number(v) and (v >= 0 if allow_zero else v > 0)
    if integer:
        ok = ok and float(v) == int(v)
    if not ok:
        kind = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{op}: {name} must be a {kind} {bound}, got {v!r}")
    return int(v) if integer else float(v)


def check_size(op: str, name: str, v) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints."""
    if is_number(v):
        v = (v, v)
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(is_number(s) and float(s) == int(s) and s > 0 for s in v)):
        raise ValueError(f"{op}: {name} must be a positive int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def check_range(op: str, name: str, v, lo_bound: float, hi_bound: float) -> tuple[float, float]:
    if (not isinstance(v, (tuple, list)) or len(v) != 2 or not all(is_number(s) for s in v)
            or not lo_bound <= v[0] <= v[1] <= hi_bound or v[1] <= 0):
        raise ValueError(f"{op}: {name} must be a (low, high) pair with "
                         f"{lo_bound} <= low <= high <= {hi_bound}, got {v!r}")
    return float(v[0]), float(v[1])


def check_fill(op: str, name: str, v, allowed_words: Sequence[str]):
    if isinstance(v, str):
        if v not in allowed_words:
            raise ValueError(f"{op}: {name} must be one of {list(allowed_words)}, a number "
                             f"or a per-channel tuple, got {v!r}")
        return v
    if is_number(v):
        return float(v)
    if isinstance(v, (tuple, list)) and v and all(is_number(s) for s in v):
        return tuple(float(s) for s in v)
    raise ValueError(f"{op}: {name} must be one of {list(allowed_words)}, a number or a "
                     f"per-channel tuple, got {v!r}")


def check_method(op: str, method):
    methods = ("bilinear", "linear", "bicubic", "cubic", "lanczos3", "lanczos5")
    if method not in methods:
        raise ValueError(f"{op}: method must be one of {list(methods)}, got {method!r}")


# -------------------------------------------------------------------------------------------
# Shared helpers (trace time)
# -------------------------------------------------------------------------------------------

def check_images(op: str, images, *, need_float: bool = True):
    if getattr(images, "ndim", None) != 4:
        raise ValueError(f"{op}: expected images of shape (B, H, W, C), got shape "
                         f"{getattr(images, 'shape', None)}")
    if need_float and not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{op}: expected float images in [0, 1], got dtype {images.dtype}")


def per_image(fn, rng, images, n: int):
    """Apply ``fn(u, image)`` to every image, ``u`` being its row of
    ``uniform(rng, (B, n))``.

    One batched draw instead of a key per image and per variable keeps the traced
    program (and its compile time) small; ops derive all their randomness from ``u``.
    """
    u = jax.random.uniform(rng, (images.shape[0], n), jnp.float32)
    return jax.vmap(fn)(u, images)


def int_below(u, n):
    """A uniform integer in {0, ..., n - 1} from ``u ~ U[0, 1)`` (``n`` may be traced)."""
    n = jnp.asarray(n, jnp.int32)
    return jnp.clip(jnp.floor(u * n).astype(jnp.int32), 0, n - 1)


def fill_values(fill, noise, img):
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


def box_mask(h: int, w: int, y0, y1, x0, x1):
    """(h, w, 1) boolean mask of rows [y0, y1) and columns [x0, x1)."""
    yy = jnp.arange(h)[:, None, None]
    xx = jnp.arange(w)[None, :, None]
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)

