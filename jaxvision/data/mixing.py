"""The batch-mixing ops, ``op(rng, images, targets) -> (images, targets)``: mixup and
CutMix, each mixing an example with its partner in the reversed batch."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvision.data.augment_util import Mix, box_mask, check_images, check_positive, int_below

# -------------------------------------------------------------------------------------------
# Batch-mixing ops
# -------------------------------------------------------------------------------------------

def _check_mix_inputs(op, images, targets):
    check_images(op, images)
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
    return functools.partial(_mixup, alpha=check_positive("mixup", "alpha", alpha))


def _cutmix(rng, images, targets, *, alpha):
    _check_mix_inputs("cutmix", images, targets)
    _, h, w, _ = images.shape
    kl, kc = jax.random.split(rng)
    lam = jax.random.beta(kl, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam)
    cut_h = (h * cut).astype(jnp.int32)
    cut_w = (w * cut).astype(jnp.int32)
    u = jax.random.uniform(kc, (2,))
    cy, cx = int_below(u[0], h), int_below(u[1], w)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    mask = box_mask(h, w, y0, y1, x0, x1)[None]
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
    return functools.partial(_cutmix, alpha=check_positive("cutmix", "alpha", alpha))

