"""ResNeSt: split-attention networks (Zhang et al., 2020, "ResNeSt: Split-Attention Networks").

A ResNet-D style network (deep 3x3 stem, average-pool projection shortcuts) whose
bottleneck 3x3 convolution is a split-attention convolution
(:class:`jaxvision.layers.split_attn.SplitAttn`).  The "avd" trick moves the stride of a
downsampling block out of the convolution into a 3x3 average pool, placed before
(``avd_first``) or after the split-attention conv.

Layout, names and numerics follow timm's ``ResNet`` + ``ResNestBottleneck`` so that
:func:`jaxvision.convert.from_torch` loads timm's state dicts directly; parameter counts
equal timm's (e.g. ``resnest50d`` 27,483,240).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.drop import module_drop_path
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.layers.split_attn import SplitAttn
from jaxvision.registry import register_model


class ResNestBottleneck(nn.Module):
    """Bottleneck with a split-attention 3x3 convolution (Zhang et al., 2020).

    1x1 conv -> [avg-pool if avd_first] -> SplitAttn 3x3 -> [avg-pool if avd and not
    avd_first] -> 1x1 conv (4x width), plus an avg-pool + 1x1 conv projection shortcut
    when the shape changes.  ``radix == 0`` gives a plain ResNeXt block.
    """

    planes: int
    strides: int = 1
    cardinality: int = 1
    base_width: int = 64
    radix: int = 2
    avd: bool = True
    avd_first: bool = False
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    expansion: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        norm = lambda name, **kw: nn.BatchNorm(use_running_average=not train,  # noqa: E731
                                               momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                                               name=name, **kw)
        def conv(f, k, name, **kw):
            return Conv(f, (k, k), use_bias=False, dtype=self.dtype, name=name, **kw)
        out_ch = self.planes * self.expansion
        gw = int(self.planes * (self.base_width / 64.0)) * self.cardinality
        stride = self.strides
        avd_stride = 0
        if self.avd and stride > 1:
            avd_stride, stride = stride, 1

        out = nn.relu(norm("bn1")(conv(gw, 1, "conv1")(x)))
        if avd_stride and self.avd_first:
            out = avg_pool(out, 3, avd_stride, 1)
        if self.radix >= 1:
            out = SplitAttn(gw, 3, strides=stride, cardinality=self.cardinality,
                            radix=self.radix, dtype=self.dtype, name="conv2")(out, train=train)
        else:
            out = conv(gw, 3, "conv2", strides=stride, padding=pad(1),
                       feature_group_count=self.cardinality)(out)
            out = nn.relu(norm("bn2")(out))
        if avd_stride and not self.avd_first:
            out = avg_pool(out, 3, avd_stride, 1)
        out = conv(out_ch, 1, "conv3")(out)
        # Zero-initialising the last BN scale makes each block start as the identity; off by
        # default so that every parameter receives a gradient from the first step.
        out = norm("bn3", scale_init=nn.initializers.zeros if self.zero_init_last
                   else nn.initializers.ones)(out)

        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_ch:
            if self.strides != 1:  # ResNet-D: average pool, then a stride-1 projection
                shortcut = avg_pool(x, 2, self.strides, ceil_mode=True, count_include_pad=False)
            shortcut = conv(out_ch, 1, "downsample_conv")(shortcut)
            shortcut = norm("downsample_bn")(shortcut)
        out = module_drop_path(self, out, self.drop_path_rate, deterministic=not train)
        return nn.relu(out + shortcut)


class ResNeSt(nn.Module):
    """ResNeSt (Zhang et al., 2020) with a deep stem of three 3x3 convolutions
    (``stem_width``, ``stem_width``, ``2 * stem_width``), a 3x3/2 max pool, four stages of
    :class:`ResNestBottleneck` and a linear classifier on globally averaged features.

    Stochastic depth drops each block's residual branch with a rate growing linearly from
    0 to ``drop_path_rate`` over the blocks.  (timm's ResNeSt block applies its drop path
    to the block input instead; that only matters in training, and the residual-branch
    form is the one described by Huang et al.)
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    channels: Sequence[int] = (64, 128, 256, 512)
    stem_width: int = 32
    cardinality: int = 1
    base_width: int = 64
    radix: int = 2
    avd: bool = True
    avd_first: bool = False
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"ResNeSt expects NHWC input of rank 4, got shape {x.shape}")
        if len(self.layers) != len(self.channels):
            raise ValueError(f"layers {tuple(self.layers)} and channels "
                             f"{tuple(self.channels)} must have the same length")
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        conv3 = lambda f, s, name: Conv(f, (3, 3), strides=s, padding=pad(1),  # noqa: E731
                                        use_bias=False, dtype=self.dtype, name=name)
        sw = self.stem_width
        # The stem keeps timm's Sequential indices (conv1.0, conv1.1, conv1.3, ...).
        x = nn.relu(norm("conv1_1")(conv3(sw, 2, "conv1_0")(x)))
        x = nn.relu(norm("conv1_4")(conv3(sw, 1, "conv1_3")(x)))
        x = nn.relu(norm("bn1")(conv3(2 * sw, 1, "conv1_6")(x)))
        x = max_pool(x, 3, 2, 1)

        total = sum(self.layers)
        idx = 0
        for s, (n, planes) in enumerate(zip(self.layers, self.channels)):
            for b in range(n):
                rate = self.drop_path_rate * idx / max(total - 1, 1)
                x = ResNestBottleneck(
                    planes, strides=2 if (s > 0 and b == 0) else 1,
                    cardinality=self.cardinality, base_width=self.base_width,
                    radix=self.radix, avd=self.avd, avd_first=self.avd_first,
                    drop_path_rate=rate, zero_init_last=self.zero_init_last,
                    dtype=self.dtype, name=f"layer{s + 1}_{b}")(x, train=train)
                idx += 1
        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.drop_rate, pool=True, dtype=self.dtype)


def _resnest(layers, stem_width, **defaults):
    def build(**kwargs):
        return ResNeSt(layers=layers, stem_width=stem_width, **dict(defaults, **kwargs))
    return build


@register_model(crop_pct=0.875)
def resnest14d(**kwargs):
    return _resnest((1, 1, 1, 1), 32)(**kwargs)


@register_model(crop_pct=0.875)
def resnest26d(**kwargs):
    return _resnest((2, 2, 2, 2), 32)(**kwargs)


@register_model(crop_pct=0.875)
def resnest50d(**kwargs):
    return _resnest((3, 4, 6, 3), 32)(**kwargs)


@register_model(input_size=(256, 256, 3), crop_pct=0.875)
def resnest101e(**kwargs):
    return _resnest((3, 4, 23, 3), 64)(**kwargs)


@register_model(input_size=(320, 320, 3), crop_pct=0.909)
def resnest200e(**kwargs):
    return _resnest((3, 24, 36, 3), 64)(**kwargs)


@register_model(input_size=(416, 416, 3), crop_pct=0.928)
def resnest269e(**kwargs):
    return _resnest((3, 30, 48, 8), 64)(**kwargs)


@register_model(crop_pct=0.875)
def resnest50d_4s2x40d(**kwargs):
    return _resnest((3, 4, 6, 3), 32, base_width=40, cardinality=2, radix=4,
                    avd_first=True)(**kwargs)


@register_model(crop_pct=0.875)
def resnest50d_1s4x24d(**kwargs):
    return _resnest((3, 4, 6, 3), 32, base_width=24, cardinality=4, radix=1,
                    avd_first=True)(**kwargs)


@register_model(input_size=(32, 32, 3), num_classes=10, crop_pct=1.0)
def test_resnest(**kwargs):
    """Tiny ResNeSt (cardinality 2, radix 2, avd first) for fast tests."""
    return _resnest((1, 1, 1, 1), 8, channels=(4, 4, 8, 8), base_width=32, cardinality=2,
                    radix=2, avd_first=True, num_classes=10)(**kwargs)


__all__ = ["ResNeSt", "ResNestBottleneck"]
