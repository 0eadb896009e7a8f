"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis, 2016).

WRN-n-k: a 3x3 stem of 16 channels, three stages of pre-activation residual blocks of
width 16k, 32k, 64k (strides 1, 2, 2), a final BN-ReLU, global average pooling and a
linear classifier.  Convolutions carry no bias.  A block of type ``B(k1, k2, ...)`` is a
sequence of BN-ReLU-conv(k_i x k_i) units, all of the stage's width; dropout (the paper's
"dropout between convolutions") sits after the ReLU of every unit but the first.  As in the
authors' code and the paper's Table 1, the depth fixes the number of blocks per stage, ``N = (depth - 4) / 6``, whatever
the block type (so B(3,1,3) at depth 22 has 3 blocks of 3 convolutions per stage); the
name WRN-n-k counts layers exactly only for B(3,3).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.drop import DropPath, linear_drop_path_rates
from jaxvision.layers.head import classifier_head
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, register_model

# The block types studied in Table 1 of the paper.
BLOCK_TYPES = ((3, 3), (3, 1, 3), (1, 3, 1), (1, 3), (3, 1), (3, 1, 1))


def blocks_per_stage(depth: int) -> int:
    """Blocks per stage ``N`` of a WRN of nominal ``depth``: ``(depth - 4) / 6``."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6N+4 with N >= 1 (10, 16, 22, 28, 40, ...), "
                         f"got {depth}")
    return (depth - 4) // 6


def block_layout(m):
    """``(name, in_width, width, stride)`` of every block of a WRN module ``m``, in order:
    ``N`` blocks per stage, the stride 2 on the first block of every stage but the first."""
    n = blocks_per_stage(m.depth)
    widths = m.widths or tuple(w * m.widen_factor for w in (16, 32, 64))
    cin = m.stem_width
    for i, w in enumerate(widths):
        for j in range(n):
            yield f"block{i + 1}_{j}", cin, w, 2 if i > 0 and j == 0 else 1
            cin = w


class WideBlock(nn.Module):
    """Pre-activation wide residual block ``B(k1, k2, ...)`` (Zagoruyko & Komodakis, 2016).

    The stride sits on the first 3x3 convolution (the first convolution if the block has no
    3x3).  When the shape changes, a 1x1 projection of the pre-activated input is the
    shortcut, as in the authors' code.
    """

    width: int
    stride: int = 1
    block_type: Sequence[int] = (3, 3)
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        conv = partial(Conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)
        ks = tuple(self.block_type)
        stride_at = ks.index(3) if 3 in ks else 0
        project = self.stride != 1 or x.shape[-1] != self.width

        y = x
        preact = None
        for i, k in enumerate(ks):
            y = nn.relu(norm(name=f"bn{i + 1}")(y))
            if i == 0:
                preact = y
            else:
                y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            s = self.stride if i == stride_at else 1
            y = conv(self.width, (k, k), strides=(s, s), padding=pad((k - 1) // 2),
                     name=f"conv{i + 1}")(y)
        y = DropPath(self.drop_path_rate, name="drop_path")(y, deterministic=not train)
        if project:
            shortcut = conv(self.width, (1, 1), strides=(self.stride,) * 2,
                            name="shortcut")(preact)
        else:
            shortcut = x
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR (Zagoruyko & Komodakis, 2016).

    Attributes:
      depth: nominal depth 6N+4, N blocks per stage.
      widen_factor: k; stage widths are (16k, 32k, 64k) (``widths`` overrides them).
      block_type: kernel sizes of the convolutions in a block, one of the paper's
        B(3,3), B(3,1,3), B(1,3,1), B(1,3), B(3,1), B(3,1,1) (any odd sizes are accepted).
      dropout_rate: dropout between the convolutions of a block (0.3 in the paper).
      drop_path_rate: stochastic depth (linear rule), not in the paper; 0 by default.
      num_classes: classifier outputs; 0 returns the pooled features.
    """

    depth: int = 28
    widen_factor: int = 10
    block_type: Sequence[int] = (3, 3)
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    widths: Sequence[int] | None = None
    stem_width: int = 16
    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if any(k % 2 == 0 or k < 1 for k in self.block_type):
            raise ValueError(f"block_type kernel sizes must be odd and positive, "
                             f"got {tuple(self.block_type)}")
        if x.ndim != 4:
            raise ValueError(f"WideResNet expects NHWC input, got shape {x.shape}")
        layout = list(block_layout(self))
        x = Conv(self.stem_width, (3, 3), padding=pad(1), use_bias=False, dtype=self.dtype,
                 name="conv1")(x)
        dprs = linear_drop_path_rates(self.drop_path_rate, len(layout))
        for (name, _, w, stride), dpr in zip(layout, dprs):
            x = WideBlock(w, stride, tuple(self.block_type), self.dropout_rate, dpr,
                          dtype=self.dtype, name=name)(x, train=train)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="bn")(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2))  # (B, 64k)
        return classifier_head(x, self.num_classes, name="fc", dtype=self.dtype)


_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)


def _wrn(depth, k, defaults, kwargs):
    return WideResNet(**dict(dict(depth=depth, widen_factor=k, **defaults), **kwargs))


# Paper parameter counts (Table 5): WRN-40-4 8.9M, WRN-16-8 11.0M, WRN-28-10 36.5M.
@register_model(**_CIFAR)
def wrn28_10(**kwargs):
    return _wrn(28, 10, {}, kwargs)


@register_model(**_CIFAR)
def wrn28_10_dropout(**kwargs):
    """WRN-28-10 with dropout 0.3 between convolutions (the paper's best CIFAR model)."""
    return _wrn(28, 10, dict(dropout_rate=0.3), kwargs)


@register_model(**_CIFAR)
def wrn40_4(**kwargs):
    return _wrn(40, 4, {}, kwargs)


@register_model(**_CIFAR)
def wrn40_2(**kwargs):
    return _wrn(40, 2, {}, kwargs)


@register_model(**_CIFAR)
def wrn40_1(**kwargs):
    return _wrn(40, 1, {}, kwargs)


@register_model(**_CIFAR)
def wrn16_8(**kwargs):
    return _wrn(16, 8, {}, kwargs)


@register_model(**_CIFAR)
def wrn16_4(**kwargs):
    return _wrn(16, 4, {}, kwargs)


@register_model(**_CIFAR)
def wrn52_1(**kwargs):
    return _wrn(52, 1, {}, kwargs)


@register_model(**_CIFAR)
def test_wrn(**kwargs):
    return _wrn(10, 1, dict(widths=(8, 16, 16), stem_width=8, dropout_rate=0.1), kwargs)


@register_model(**_CIFAR)
def test_wrn_b313(**kwargs):
    return _wrn(10, 1, dict(widths=(8, 8, 16), stem_width=4, block_type=(3, 1, 3)), kwargs)
