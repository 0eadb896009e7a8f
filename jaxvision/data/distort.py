"""Distorted MNIST (Jaderberg et al., 2015, section 4.1), generated on the fly in JAX.

Every function takes ``(rng, images)`` with ``images`` of shape ``(B, H, W, C)`` (MNIST:
``(B, 28, 28, 1)``), uint8 or float, and returns the distorted batch in the same dtype
(uint8 results are rounded and clipped).  They are vectorised over the batch, jit-able,
and deterministic in ``rng``: the same key gives the same batch.

* ``R``   -- random rotation in [-90, 90] degrees, same canvas.
* ``RTS`` -- rotation in [-45, 45] degrees, scale in [0.7, 1.2], placed at a random
  location of a 42x42 canvas.
* ``P``   -- projective: the four image corners are moved by N(0, 0.1) (in the [-1, 1]
  frame) after a random scale in [0.75, 1], same canvas.
* ``TC``  -- translated and cluttered: the digit at a random location of a 60x60 canvas,
  plus 8x8 patches cropped from *other* digits of the batch at random places (the
  paper's cluttered 60x60 task).  In the paper ``E`` denotes elastic warping, which is
  not provided here.

Geometry: warps map each output pixel centre back to the input (inverse mapping) and
sample bilinearly with zeros outside, so a zero rotation, unit scale and no shift copy the
digit exactly into the middle of the canvas.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvision.layers.spatial_transformer import bilinear_sample

MODES = ("R", "RTS", "P", "TC")


def _as_float(images):
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, H, W, C), got {images.shape}")
    if not (jnp.issubdtype(images.dtype, jnp.integer) or jnp.issubdtype(images.dtype,
                                                                         jnp.floating)):
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    return images.astype(jnp.float32), images.dtype


def _restore(x, dtype):
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return jnp.clip(jnp.round(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _pixel_grid(h, w):
    """Output pixel centres relative to the canvas centre, (h, w) each."""
    ys = jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2.0
    xs = jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2.0
    return jnp.meshgrid(xs, ys, indexing="xy")


def _warp_similarity(images, angle, scale, shift, out_hw):
    """Rotate by ``angle`` (radians), scale, then shift by ``shift`` (B, 2) pixels (x, y)
    into an ``out_hw`` canvas; both images are centred on each other before the shift."""
    b, h, w, _ = images.shape
    px, py = _pixel_grid(*out_hw)
    # Inverse map: q = R(-angle) (p - shift) / scale, then back to input pixel indices.
    cos, sin = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
    dx = px[None] - shift[:, 0, None, None]
    dy = py[None] - shift[:, 1, None, None]
    s = scale[:, None, None]
    ix = (cos * dx + sin * dy) / s + (w - 1) / 2.0
    iy = (-sin * dx + cos * dy) / s + (h - 1) / 2.0
    return bilinear_sample(images, ix, iy)


def rotate(rng, images, *, max_degrees: float = 90.0):
    """``R``: uniform random rotation in ``[-max_degrees, max_degrees]`` about the centre."""
    x, dtype = _as_float(images)
    b, h, w, _ = x.shape
    angle = jnp.deg2rad(jax.random.uniform(rng, (b,), minval=-max_degrees, maxval=max_degrees))
    out = _warp_similarity(x, angle, jnp.ones((b,)), jnp.zeros((b, 2)), (h, w))
    return _restore(out, dtype)


def rotate_scale_translate(rng, images, *, max_degrees: float = 45.0,
                           scale_range=(0.7, 1.2), canvas: int = 42, max_shift=None):
    """``RTS``: rotation, scale, and a uniform random placement in a ``canvas`` square.

    ``max_shift`` bounds the displacement of the digit centre from the canvas centre
    (pixels, per axis); the default ``(canvas - H) / 2`` keeps an unscaled digit inside.
    """
    x, dtype = _as_float(images)
    b, h, w, _ = x.shape
    if canvas < 1:
        raise ValueError(f"canvas must be positive, got {canvas}")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if max_shift is None:
        max_shift = max(canvas - max(h, w), 0) / 2.0
    k_rot, k_scale, k_shift = jax.random.split(rng, 3)
    angle = jnp.deg2rad(jax.random.uniform(k_rot, (b,), minval=-max_degrees,
                                           maxval=max_degrees))
    scale = jax.random.uniform(k_scale, (b,), minval=lo, maxval=hi)
    shift = jax.random.uniform(k_shift, (b, 2), minval=-max_shift, maxval=max_shift)
    out = _warp_similarity(x, angle, scale, shift, (canvas, canvas))
    return _restore(out, dtype)


def _homography(src, dst):
    """3x3 matrix H (H[2, 2] = 1) with H @ (src, 1) ~ (dst, 1) for 4 point pairs (4, 2)."""
    x, y = src[:, 0], src[:, 1]
    u, v = dst[:, 0], dst[:, 1]
    zeros, ones = jnp.zeros_like(x), jnp.ones_like(x)
    rows_u = jnp.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], axis=1)
    rows_v = jnp.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], axis=1)
    a = jnp.concatenate([rows_u, rows_v], axis=0)  # (8, 8)
    rhs = jnp.concatenate([u, v], axis=0)
    h = jnp.linalg.solve(a, rhs)
    return jnp.concatenate([h, jnp.ones((1,), h.dtype)]).reshape(3, 3)


def projective(rng, images, *, corner_std: float = 0.1, scale_range=(0.75, 1.0)):
    """``P``: a random projective warp.  The image corners (+-1, +-1) go to
    ``scale * corner + N(0, corner_std^2)`` in the normalised frame."""
    x, dtype = _as_float(images)
    b, h, w, _ = x.shape
    k_scale, k_noise = jax.random.split(rng)
    lo, hi = scale_range
    scale = jax.random.uniform(k_scale, (b, 1, 1), minval=lo, maxval=hi)
    corners = jnp.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    moved = scale * corners + corner_std * jax.random.normal(k_noise, (b, 4, 2))
    # Output -> input mapping: the moved corners come from the original ones.
    hom = jax.vmap(_homography, in_axes=(0, None))(moved, corners)  # (B, 3, 3)
    # Output pixel centres in the normalised frame (torch's align_corners=False).
    px, py = _pixel_grid(h, w)
    nx, ny = px * 2.0 / w, py * 2.0 / h
    pts = jnp.stack([nx, ny, jnp.ones_like(nx)], axis=-1)  # (h, w, 3)
    src = jnp.einsum("bij,hwj->bhwi", hom, pts)
    sx, sy = src[..., 0] / src[..., 2], src[..., 1] / src[..., 2]
    ix = sx * w / 2.0 + (w - 1) / 2.0
    iy = sy * h / 2.0 + (h - 1) / 2.0
    return _restore(bilinear_sample(x, ix, iy), dtype)


def translate_clutter(rng, images, *, canvas: int = 60, num_clutter: int = 6,
                      clutter_size: int = 8, max_shift=None):
    """``TC``: the digit at a random integer offset of a ``canvas`` square, plus
    ``num_clutter`` ``clutter_size`` squares cropped from other digits of the batch
    (pixel-wise maximum, so clutter never erases the digit).

    ``max_shift`` bounds the offset from the centred position (default: anywhere that
    keeps the whole digit inside).
    """
    x, dtype = _as_float(images)
    b, h, w, c = x.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas ({canvas}) must be at least the image size ({h}x{w})")
    if not 0 < clutter_size <= min(h, w, canvas):
        raise ValueError(f"clutter_size must be in [1, {min(h, w)}], got {clutter_size}")
    free_y, free_x = canvas - h, canvas - w
    if max_shift is None:
        max_shift = max(free_y, free_x)
    k_pos, k_src, k_crop, k_place = jax.random.split(rng, 4)
    # Digit offset: centred position +- max_shift, clipped to keep the digit inside.
    cy, cx = free_y // 2, free_x // 2
    off = jax.random.randint(k_pos, (b, 2), -max_shift, max_shift + 1)
    oy = jnp.clip(cy + off[:, 0], 0, free_y)
    ox = jnp.clip(cx + off[:, 1], 0, free_x)

    def place(img, y, x0):
        return jax.lax.dynamic_update_slice(jnp.zeros((canvas, canvas, c), img.dtype), img,
                                            (y, x0, 0))

    out = jax.vmap(place)(x, oy, ox)
    if num_clutter > 0:
        n, s = num_clutter, clutter_size
        # Another digit of the batch for every patch (the digit itself only if B == 1).
        step = jax.random.randint(k_src, (b, n), 1, max(b, 2))
        src = (jnp.arange(b)[:, None] + step) % b
        crop = jax.random.randint(k_crop, (b, n, 2), 0, jnp.array([h - s + 1, w - s + 1]))
        where = jax.random.randint(k_place, (b, n, 2), 0, canvas - s + 1)

        def patch(j, cyx, pyx):
            piece = jax.lax.dynamic_slice(x[j], (cyx[0], cyx[1], 0), (s, s, c))
            return jax.lax.dynamic_update_slice(jnp.zeros((canvas, canvas, c), x.dtype), piece,
                                                (pyx[0], pyx[1], 0))

        clutter = jax.vmap(jax.vmap(patch))(src, crop, where).max(axis=1)
        out = jnp.maximum(out, clutter)
    return _restore(out, dtype)


_FUNCS = {"R": rotate, "RTS": rotate_scale_translate, "P": projective, "TC": translate_clutter}


def distort(rng, images, mode: str, **kwargs):
    """Distort a batch as one of the paper's distorted-MNIST variants (see module doc).

    ``kwargs`` go to the mode's function (e.g. ``max_degrees``, ``canvas``).
    """
    check_mode(mode)
    return _FUNCS[mode](rng, images, **kwargs)


def check_mode(mode: str) -> str:
    """``mode`` itself if it names a distortion, else a ValueError with the close matches."""
    if mode == "E":
        raise ValueError("mode 'E' is the paper's elastic warping, which is not provided; "
                         "the cluttered 60x60 task is mode 'TC'")
    if mode not in _FUNCS:
        import difflib
        close = difflib.get_close_matches(str(mode), MODES, n=1) or [
            m for m in MODES if m.lower() == str(mode).lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown distortion mode {mode!r}{hint} (choose one of {MODES})")
    return mode


def distort_images(images, mode: str, seed: int = 0, chunk: int = 1000, **kwargs):
    """A fixed distorted copy of a uint8 array ``images`` (N, H, W, C): what the paper's
    distorted *test* sets are.  Image ``i`` is distorted with key ``fold_in(seed, i // chunk)``
    inside a chunk of ``chunk`` images, so the result depends only on ``seed``, ``chunk`` and
    the images (not on the machine or on how many images there are).  Clutter (mode ``TC``)
    is drawn from the other digits of the same chunk.
    """
    import numpy as np
    check_mode(mode)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"distort_images takes uint8 images (N, H, W, C), got "
                         f"{images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("distort_images: no images")
    fn = jax.jit(lambda key, x: distort(key, x, mode, **kwargs))
    base = jax.random.PRNGKey(seed)
    out = []
    for k, start in enumerate(range(0, len(images), chunk)):
        part = images[start:start + chunk]
        n = len(part)
        if n < chunk:  # pad the last chunk so every chunk compiles to the same program
            part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
        out.append(np.asarray(fn(jax.random.fold_in(base, k), part))[:n])
    return np.concatenate(out)


__all__ = ["MODES", "check_mode", "distort", "distort_images", "projective", "rotate",
           "rotate_scale_translate", "translate_clutter"]
