"""Split-attention convolution, the core of ResNeSt (Zhang et al., 2020, "ResNeSt:
Split-Attention Networks").

A grouped convolution produces ``radix`` splits of every cardinal group.  The splits are
summed and globally pooled, squeezed through a small two-layer 1x1 network, and turned
into one attention weight per split and channel: a softmax across the splits (radix > 1)
or a sigmoid (radix == 1, then it is a squeeze-and-excitation gate).  The output is the
attention-weighted sum of the splits.

Parameter layout and channel ordering follow timm's ``SplitAttn`` (submodules ``conv``,
``bn0``, ``fc1``, ``bn1``, ``fc2``), so torch weights convert one to one.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.helpers import make_divisible


def radix_softmax(logits: jax.Array, radix: int, cardinality: int) -> jax.Array:
    """Attention weights from the fc2 output ``(B, cardinality * radix * c)``.

    A grouped 1x1 convolution lays its outputs out group by group, i.e. as
    ``(cardinality, radix, c)``; the softmax runs over the radix axis.  The result is
    returned as ``(B, radix, cardinality * c)`` to match the split layout of the features.
    """
    b = logits.shape[0]
    if radix == 1:
        return jax.nn.sigmoid(logits).reshape(b, 1, -1)
    x = logits.reshape(b, cardinality, radix, -1)
    x = jax.nn.softmax(x, axis=2)
    return x.transpose(0, 2, 1, 3).reshape(b, radix, -1)


class SplitAttn(nn.Module):
    """Split-attention convolution (Zhang et al., 2020), NHWC.

    ``features`` output channels; the grouped conv has ``features * radix`` outputs in
    ``cardinality * radix`` groups.  ``attn_channels`` (the width of the attention MLP)
    defaults to timm's ``make_divisible(in * radix * rd_ratio, min_value=32)``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    dilation: int = 1
    padding: int | None = None
    cardinality: int = 1
    radix: int = 2
    rd_ratio: float = 0.25
    rd_divisor: int = 8
    attn_channels: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.radix < 1:
            raise ValueError(f"SplitAttn needs radix >= 1, got {self.radix}")
        if self.features % self.cardinality:
            raise ValueError(f"SplitAttn: features ({self.features}) must be divisible by "
                             f"cardinality ({self.cardinality})")
        in_ch = x.shape[-1]
        if in_ch % (self.cardinality * self.radix):
            raise ValueError(f"SplitAttn: input channels ({in_ch}) must be divisible by "
                             f"cardinality * radix ({self.cardinality * self.radix})")
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        attn_ch = self.attn_channels or make_divisible(in_ch * self.radix * self.rd_ratio,
                                                       min_value=32, divisor=self.rd_divisor)
        p = self.kernel_size // 2 * self.dilation if self.padding is None else self.padding
        r, c = self.radix, self.features

        x = Conv(c * r, (self.kernel_size,) * 2, strides=self.strides, padding=pad(p),
                 kernel_dilation=self.dilation, feature_group_count=self.cardinality * r,
                 use_bias=False, dtype=self.dtype, name="conv")(x)
        x = nn.relu(norm("bn0")(x))                                  # (B, H, W, R*C)
        b, h, w, _ = x.shape
        splits = x.reshape(b, h, w, r, c)  # split r holds channels [r*C, (r+1)*C)
        gap = jnp.mean(splits.sum(axis=3), axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        gap = Conv(attn_ch, (1, 1), feature_group_count=self.cardinality, dtype=self.dtype,
                   name="fc1")(gap)
        gap = nn.relu(norm("bn1")(gap))
        logits = Conv(c * r, (1, 1), feature_group_count=self.cardinality, dtype=self.dtype,
                      name="fc2")(gap)
        attn = radix_softmax(logits.reshape(b, -1), r, self.cardinality)  # (B, R, C)
        return jnp.einsum("bhwrc,brc->bhwc", splits, attn.astype(splits.dtype))


__all__ = ["SplitAttn", "radix_softmax"]
