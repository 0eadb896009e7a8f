"""Spatial transformer (Jaderberg et al., 2015): localisation net -> affine ``theta`` ->
sampling grid -> differentiable bilinear sampler.

Coordinate conventions follow torch's ``F.affine_grid`` / ``F.grid_sample``:

* ``theta`` is ``(B, 2, 3)`` and maps *output* (target) normalised coordinates
  ``(x_t, y_t, 1)`` to *input* (source) normalised coordinates ``(x_s, y_s)``; ``x`` is the
  width axis, ``y`` the height axis, and both run from -1 (left/top) to +1 (right/bottom).
* ``align_corners=False`` (the default, as torch's): -1 and +1 are the outer *edges* of the
  border pixels, so pixel ``j`` of a size-``W`` axis has centre ``(2j + 1) / W - 1`` and a
  normalised ``x`` maps to pixel index ``((x + 1) W - 1) / 2``.  The result does not depend
  on the resolution of the grid, which is why torch made it the default.
* ``align_corners=True``: -1 and +1 are the *centres* of the border pixels, pixel ``j`` sits
  at ``2j / (W - 1) - 1`` and ``x`` maps to ``(x + 1)(W - 1) / 2``.
* Samples outside the image read zeros (torch's ``padding_mode='zeros'``).

The sampler is plain gathers and products, so JAX autodiff yields the paper's
(sub-)gradients (eqs. 6-7): ``dV/dU`` scatters the bilinear weights back onto the four
neighbours, and ``dV/dx_s`` is the difference of neighbouring pixels weighted by the
``y`` kernel (the kernel ``max(0, 1 - |x_s - m|)`` has slope +1 left of ``m``, -1 right).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _base_coords(n: int, align_corners: bool, dtype) -> jnp.ndarray:
    """Normalised centres of the ``n`` pixels of one axis."""
    if align_corners:
        if n == 1:
            return jnp.zeros((1,), dtype)
        return jnp.linspace(-1.0, 1.0, n, dtype=dtype)
    return (2.0 * jnp.arange(n, dtype=dtype) + 1.0) / n - 1.0


def affine_grid(theta: jnp.ndarray, size: Sequence[int], align_corners: bool = False):
    """Sampling grid of an affine transform, as ``torch.nn.functional.affine_grid``.

    Args:
      theta: ``(B, 2, 3)`` affine matrices (output -> input normalised coordinates).
      size: ``(H, W)`` of the output, or ``(B, H, W, C)`` (NHWC; B and C are ignored).
      align_corners: see the module docstring.

    Returns:
      ``(B, H, W, 2)`` source coordinates ``(x_s, y_s)`` in the normalised frame.
    """
    theta = jnp.asarray(theta)
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"affine_grid expects theta of shape (B, 2, 3), got {theta.shape}")
    if len(size) == 4:
        size = size[1:3]
    if len(size) != 2:
        raise ValueError(f"affine_grid size must be (H, W) or (B, H, W, C), got {tuple(size)}")
    h, w = int(size[0]), int(size[1])
    dtype = theta.dtype if jnp.issubdtype(theta.dtype, jnp.floating) else jnp.float32
    xs = _base_coords(w, align_corners, dtype)
    ys = _base_coords(h, align_corners, dtype)
    gx, gy = jnp.meshgrid(xs, ys, indexing="xy")  # (H, W) each
    base = jnp.stack([gx, gy, jnp.ones_like(gx)], axis=-1)  # (H, W, 3) homogeneous targets
    return jnp.einsum("hwk,bik->bhwi", base, theta.astype(dtype))


def unnormalize(coord: jnp.ndarray, size: int, align_corners: bool = False) -> jnp.ndarray:
    """Normalised coordinate in [-1, 1] -> pixel index coordinate (0 = first pixel centre)."""
    if align_corners:
        return (coord + 1.0) * 0.5 * (size - 1)
    return ((coord + 1.0) * size - 1.0) * 0.5


def bilinear_sample(img: jnp.ndarray, ix: jnp.ndarray, iy: jnp.ndarray) -> jnp.ndarray:
    """Bilinear interpolation of ``img`` at pixel-index coordinates, zeros outside.

    Args:
      img: ``(B, H, W, C)``.
      ix, iy: ``(B, Ho, Wo)`` column / row coordinates in pixels (0 = first pixel centre).

    Returns:
      ``(B, Ho, Wo, C)``: ``sum_nm U_nm max(0, 1-|ix-m|) max(0, 1-|iy-n|)`` (eq. 5).
    """
    b, h, w, c = img.shape
    # floor() has zero derivative almost everywhere; stop_gradient makes that explicit so the
    # only path to (ix, iy) is through the interpolation weights, as in the paper.
    x0 = jax.lax.stop_gradient(jnp.floor(ix))
    y0 = jax.lax.stop_gradient(jnp.floor(iy))
    wx1 = ix - x0  # weight of the right neighbour: 1 - |ix - (x0 + 1)|
    wy1 = iy - y0
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    flat = img.reshape(b, h * w, c)

    def tap(yi, xi, weight):
        # Out-of-range neighbours contribute zero: clip the index for a safe gather and
        # zero the weight, so neither the value nor its gradient leaks in from the border.
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)  # (B, Ho, Wo)
        vals = jnp.take_along_axis(flat, idx.reshape(b, -1, 1), axis=1)
        vals = vals.reshape(*idx.shape, c)
        return vals * jnp.where(valid, weight, 0.0)[..., None].astype(img.dtype)

    return (tap(y0, x0, wy0 * wx0) + tap(y0, x0 + 1, wy0 * wx1)
            + tap(y0 + 1, x0, wy1 * wx0) + tap(y0 + 1, x0 + 1, wy1 * wx1))


def grid_sample(img: jnp.ndarray, grid: jnp.ndarray, align_corners: bool = False):
    """Bilinear sampling with zero padding, as ``torch.nn.functional.grid_sample``
    (``mode='bilinear'``, ``padding_mode='zeros'``), in NHWC.

    Args:
      img: ``(B, H, W, C)`` input ``U``.
      grid: ``(B, Ho, Wo, 2)`` normalised source coordinates ``(x_s, y_s)``.

    Returns:
      ``(B, Ho, Wo, C)`` output ``V``.
    """
    if img.ndim != 4:
        raise ValueError(f"grid_sample expects an NHWC image, got shape {img.shape}")
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != img.shape[0]:
        raise ValueError(f"grid_sample expects a grid (B={img.shape[0]}, Ho, Wo, 2), "
                         f"got {grid.shape}")
    _, h, w, _ = img.shape
    grid = grid.astype(jnp.promote_types(grid.dtype, jnp.float32))
    ix = unnormalize(grid[..., 0], w, align_corners)
    iy = unnormalize(grid[..., 1], h, align_corners)
    return bilinear_sample(img, ix, iy)


def identity_theta_init(key, shape, dtype=jnp.float32):
    """Bias initialiser for the 6-unit theta layer: the identity transform."""
    del key
    if tuple(shape) != (6,):
        raise ValueError(f"identity_theta_init is for a 6-vector bias, got shape {shape}")
    return jnp.array([1, 0, 0, 0, 1, 0], dtype)


class SpatialTransformer(nn.Module):
    """Spatial transformer module (Jaderberg et al., 2015) with an affine transform.

    ``localization`` maps the input ``U`` (B, H, W, C) to features; any leading shape is
    flattened to ``(B, D)``.  A final dense layer ``theta`` regresses the 6 affine
    parameters; it starts with zero weights and the identity as bias, so at initialisation
    the module returns its input unchanged (for ``out_size`` equal to the input size).

    Attributes:
      localization: the localisation network (a Linen module called as ``f(x, train=...)``
        if it accepts ``train``, else ``f(x)``).
      out_size: ``(H', W')`` of the output grid; None keeps the input size.
      align_corners: coordinate convention, see the module docstring.
      theta_kernel_init: initialiser of the theta layer's weights; zeros (the paper's
        choice) makes the initial transform exactly the identity whatever the input.
    """

    localization: nn.Module
    out_size: Optional[Sequence[int]] = None
    align_corners: bool = False
    theta_kernel_init: Callable = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if "train" in inspect.signature(type(self.localization).__call__).parameters:
            feats = self.localization(x, train=train)
        else:
            feats = self.localization(x)
        feats = feats.reshape(feats.shape[0], -1)
        theta = nn.Dense(6, kernel_init=self.theta_kernel_init, bias_init=identity_theta_init,
                         dtype=self.dtype, name="theta")(feats)
        theta = theta.reshape(-1, 2, 3)
        # Stored so callers can inspect or regularise the predicted transform (not at init,
        # where it would become an extra variable collection).
        if not self.is_initializing():
            self.sow("intermediates", "affine", theta)
        size = tuple(self.out_size) if self.out_size is not None else x.shape[1:3]
        grid = affine_grid(theta.astype(jnp.float32), size, self.align_corners)
        return grid_sample(x, grid, self.align_corners).astype(self.dtype)


__all__ = ["SpatialTransformer", "affine_grid", "bilinear_sample", "grid_sample",
           "identity_theta_init", "unnormalize"]
