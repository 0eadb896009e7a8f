"""Channel and spatial attention modules for convolutional networks.

* :class:`SqueezeExcite` -- Squeeze-and-Excitation (Hu et al., 2018), laid out like timm's
  ``SEModule`` (1x1 convolutions ``fc1``/``fc2``) so torch weights map one to one.
* :class:`ChannelAttention`, :class:`SpatialAttention`, :class:`CBAM` -- Convolutional Block
  Attention Module (Woo et al., 2018).

All modules take NHWC inputs and return a tensor of the same shape.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.helpers import make_divisible


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None,
                     rd_divisor: int) -> int:
    """Hidden width of an attention bottleneck: ``rd_channels`` if given, otherwise
    ``channels * rd_ratio`` rounded to a multiple of ``rd_divisor`` (never rounded up for
    the 10% rule, as timm's SE)."""
    if rd_channels:
        return int(rd_channels)
    if rd_divisor <= 1:
        return max(1, int(channels * rd_ratio))
    return make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation block (Hu et al., 2018).

    ``x * gate(fc2(act(fc1(mean_hw(x)))))`` with ``fc1``/``fc2`` as 1x1 convolutions.
    The hidden width is ``rd_channels`` when given, otherwise ``C * rd_ratio`` rounded to a
    multiple of ``rd_divisor`` (timm's default: ratio 1/16, divisor 8; the paper's plain
    ``C // r`` is ``rd_divisor=1``).  ``add_maxpool`` averages the mean- and max-pooled
    descriptors (timm's experimental option); ``use_norm`` puts a BatchNorm after ``fc1``.
    """

    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int = 8
    act_fn: Callable = nn.relu
    gate_fn: Callable = nn.sigmoid
    use_bias: bool = True
    add_maxpool: bool = False
    use_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        c = x.shape[-1]
        rd = reduced_channels(c, self.rd_ratio, self.rd_channels, self.rd_divisor)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * jnp.max(x, axis=(1, 2), keepdims=True)
        s = Conv(rd, (1, 1), use_bias=self.use_bias, dtype=self.dtype, name="fc1")(s)
        if self.use_norm:
            s = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name="bn")(s)
        s = self.act_fn(s)
        s = Conv(c, (1, 1), use_bias=self.use_bias, dtype=self.dtype, name="fc2")(s)
        return x * self.gate_fn(s)


class ChannelAttention(nn.Module):
    """CBAM channel attention (Woo et al., 2018):
    ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one shared two-layer MLP
    ``W1 relu(W0 .)``, ``W0`` of shape C/r x C.  The reference code uses biased linear
    layers and ``C // r`` hidden units, which reproduces the paper's parameter counts."""

    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int = 1
    act_fn: Callable = nn.relu
    gate_fn: Callable = nn.sigmoid
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        rd = reduced_channels(c, self.rd_ratio, self.rd_channels, self.rd_divisor)
        fc1 = nn.Dense(rd, use_bias=self.use_bias, dtype=self.dtype, name="fc1")
        fc2 = nn.Dense(c, use_bias=self.use_bias, dtype=self.dtype, name="fc2")
        mlp = lambda v: fc2(self.act_fn(fc1(v)))
        logits = mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2)))  # (B, C)
        return x * self.gate_fn(logits)[:, None, None, :]


class SpatialAttention(nn.Module):
    """CBAM spatial attention (Woo et al., 2018):
    ``M_s(F) = sigmoid(f7x7([AvgPool_c(F); MaxPool_c(F)]))``, pooling over channels.

    As in the paper's reference code, the 7x7 convolution has no bias and is followed by a
    BatchNorm (torch momentum 0.01, i.e. Flax momentum 0.99); ``use_norm=False`` gives the
    bare formula with a biased convolution.
    """

    kernel_size: int = 7
    use_norm: bool = True
    gate_fn: Callable = nn.sigmoid
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        pooled = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                                  jnp.max(x, axis=-1, keepdims=True)], axis=-1)  # (B, H, W, 2)
        k = self.kernel_size
        s = Conv(1, (k, k), padding=pad((k - 1) // 2), use_bias=not self.use_norm,
                 dtype=self.dtype, name="conv")(pooled)
        if self.use_norm:
            s = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-5,
                             dtype=self.dtype, name="bn")(s)
        return x * self.gate_fn(s)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018): channel attention
    followed by spatial attention, ``F' = M_c(F) * F``, ``F'' = M_s(F') * F'``."""

    rd_ratio: float = 1.0 / 16
    rd_channels: int | None = None
    rd_divisor: int = 1
    spatial_kernel_size: int = 7
    act_fn: Callable = nn.relu
    gate_fn: Callable = nn.sigmoid
    mlp_bias: bool = True
    spatial_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.spatial_kernel_size % 2 != 1:
            raise ValueError(f"CBAM spatial_kernel_size must be odd, got {self.spatial_kernel_size}")
        x = ChannelAttention(self.rd_ratio, self.rd_channels, self.rd_divisor, self.act_fn,
                             self.gate_fn, self.mlp_bias, dtype=self.dtype, name="channel")(x)
        return SpatialAttention(self.spatial_kernel_size, self.spatial_norm, self.gate_fn,
                                dtype=self.dtype, name="spatial")(x, train=train)


__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "SqueezeExcite", "reduced_channels"]
