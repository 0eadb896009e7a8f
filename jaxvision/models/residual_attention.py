"""Residual Attention Network (Wang et al., 2017, "Residual Attention Network for Image
Classification").

Stacked attention modules, each with two branches on a shared input:

* the trunk branch F: ``t`` pre-activation residual units;
* the soft mask branch M: a bottom-up top-down hourglass.  Max pooling (3x3/2) followed
  by ``r`` residual units goes down to the lowest resolution (``2r`` units there), with a
  residual unit on a skip connection at every intermediate scale; on the way up, bilinear
  upsampling to the size of the next finer scale, addition of that scale's skip output and
  ``r`` residual units; a last upsampling to the trunk's size, then
  BN-ReLU-1x1 conv-BN-ReLU-1x1 conv and a sigmoid, giving a mixed spatial and channel mask.

The module output is *attention residual learning*: ``H = (1 + M) * F``, so that a mask
near zero passes the trunk features unchanged instead of attenuating them; ``p``
residual units come before the split and after the merge.  Hyper-parameters follow the
paper (p = 1, t = 2, r = 1) and the structure of the authors' released Caffe networks
(Attention-56 / Attention-92 deploy prototxt): a 7x7/2 stem with BN-ReLU and 3x3/2 max
pooling, bottleneck pre-activation units (1x1, 3x3, 1x1 with a 4x narrower middle, a 1x1
projection shortcut taken from the pre-activated input when the shape changes), three
stages of attention modules at 56, 28 and 14 pixels with 3, 2 and 1 mask poolings, three
2048-wide units at 7 pixels, a final BN-ReLU, global average pooling and a classifier.
Pooling rounds output sizes up (Caffe), and upsampling is Caffe's ``Interp``: bilinear with
aligned corners.

Attention-56 has one attention module per stage, Attention-92 has 1, 2 and 3.
Parameter counts: Attention-56 31,810,728 (paper: 31.9M); Attention-92 52,466,344 (paper:
51.3M).  Both equal, to the parameter, the trainable parameters of the authors' released
deploy files (convolutions, classifier, BN scale and shift).  Attention-92 is 2.3% above the
figure printed in the paper; the paper's number cannot be reached without dropping units the
released network has (the same per-module units as Attention-56).  (One
released Attention-92 file uses tanh for the mask; the paper and Attention-56 use sigmoid.)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import max_pool
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, register_model


def interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation weights with aligned corners: output i samples input position
    ``i * (n_in - 1) / (n_out - 1)`` (Caffe's Interp layer)."""
    m = np.zeros((n_out, n_in), np.float32)
    if n_out == 1 or n_in == 1:
        m[:, 0] = 1.0
        return m
    pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def upsample_bilinear(x, size) -> jax.Array:
    """Bilinear resize (aligned corners) of (B, H, W, C) to ``size`` = (H', W')."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return x
    mh = jnp.asarray(interp_matrix(h, size[0]), x.dtype)
    mw = jnp.asarray(interp_matrix(w, size[1]), x.dtype)
    return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, x)


def attention_residual(trunk, mask):
    """Attention residual learning: ``H = (1 + M) * F``."""
    return (1.0 + mask) * trunk


class PreActUnit(nn.Module):
    """Pre-activation bottleneck residual unit (He et al., 2016, "Identity Mappings"):
    BN-ReLU-1x1 conv, BN-ReLU-3x3 conv (stride here), BN-ReLU-1x1 conv, plus the input, or a
    1x1 projection of the pre-activated input when the width or stride changes."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        def conv(f, k, name, **kw):
            return Conv(f, (k, k), use_bias=False, dtype=self.dtype, name=name, **kw)

        mid = self.features // 4
        a = nn.relu(norm("bn1")(x))
        h = conv(mid, 1, "conv1")(a)
        h = conv(mid, 3, "conv2", strides=self.strides, padding=pad(1))(nn.relu(norm("bn2")(h)))
        h = conv(self.features, 1, "conv3")(nn.relu(norm("bn3")(h)))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, "shortcut", strides=self.strides)(a)
        return h + x


class AttentionModule(nn.Module):
    """Attention module (Wang et al., 2017): ``p`` units, then trunk (``t`` units) and
    soft mask (``num_pools`` max-pool levels, ``r`` units each, skip units between),
    merged as ``(1 + M) * F``, then ``p`` units."""

    features: int
    num_pools: int = 1
    p: int = 1
    t: int = 2
    r: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.num_pools < 1:
            raise ValueError(f"AttentionModule needs num_pools >= 1, got {self.num_pools}")
        unit = lambda name: PreActUnit(self.features, dtype=self.dtype, name=name)  # noqa: E731
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        for i in range(self.p):
            x = unit(f"pre{i}")(x, train=train)

        trunk = x
        for i in range(self.t):
            trunk = unit(f"trunk{i}")(trunk, train=train)

        # Bottom-up: pool, r units (2r at the coarsest level); a skip unit per finer level.
        m, skips, sizes = x, [], []
        for lvl in range(self.num_pools):
            m = max_pool(m, 3, 2, 0, ceil_mode=True)
            last = lvl == self.num_pools - 1
            for i in range(2 * self.r if last else self.r):
                m = unit(f"down{lvl}_{i}")(m, train=train)
            if not last:
                skips.append(unit(f"skip{lvl}")(m, train=train))
                sizes.append(m.shape[1:3])
        # Top-down: upsample to the next finer level, add its skip, r units.
        for lvl in reversed(range(self.num_pools - 1)):
            m = upsample_bilinear(m, sizes[lvl]) + skips[lvl]
            for i in range(self.r):
                m = unit(f"up{lvl}_{i}")(m, train=train)
        m = upsample_bilinear(m, trunk.shape[1:3])
        m = Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                 name="mask_conv1")(nn.relu(norm("mask_bn1")(m)))
        m = Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                 name="mask_conv2")(nn.relu(norm("mask_bn2")(m)))
        x = attention_residual(trunk, jax.nn.sigmoid(m))

        for i in range(self.p):
            x = unit(f"post{i}")(x, train=train)
        return x


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network (Wang et al., 2017).

    ``modules``: attention modules per stage; ``widths``: output channels of the stages
    (the last entry is the final, attention-free stage of ``final_units`` units);
    ``num_pools``: mask-branch depth per attention stage.  ``stem='imagenet'`` is the
    7x7/2 conv + 3x3/2 max pool stem; ``'cifar'`` a 3x3 conv at full resolution.
    """

    modules: Sequence[int] = (1, 1, 1)
    widths: Sequence[int] = (256, 512, 1024, 2048)
    num_pools: Sequence[int] = (3, 2, 1)
    stem: str = "imagenet"
    stem_width: int = 64
    final_units: int = 3
    final_stride: int = 2
    p: int = 1
    t: int = 2
    r: int = 1
    num_classes: int = 1000
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"ResidualAttentionNet expects NHWC input of rank 4, got shape "
                             f"{x.shape}")
        if not (len(self.modules) == len(self.num_pools) == len(self.widths) - 1):
            raise ValueError(f"modules {tuple(self.modules)}, num_pools "
                             f"{tuple(self.num_pools)} need one entry per attention stage and "
                             f"widths {tuple(self.widths)} one more")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        if self.stem == "imagenet":
            x = Conv(self.stem_width, (7, 7), strides=2, padding=pad(3), use_bias=False,
                     dtype=self.dtype, name="conv1")(x)
            x = max_pool(nn.relu(norm("bn1")(x)), 3, 2, 0, ceil_mode=True)
        else:
            x = Conv(self.stem_width, (3, 3), padding=pad(1), use_bias=False,
                     dtype=self.dtype, name="conv1")(x)
            x = nn.relu(norm("bn1")(x))

        for s, (n, pools) in enumerate(zip(self.modules, self.num_pools)):
            x = PreActUnit(self.widths[s], strides=1 if s == 0 else 2, dtype=self.dtype,
                           name=f"pre_res{s + 1}")(x, train=train)
            for i in range(n):
                x = AttentionModule(self.widths[s], pools, self.p, self.t, self.r,
                                    dtype=self.dtype, name=f"stage{s + 1}_{i}")(x, train=train)
        for i in range(self.final_units):
            x = PreActUnit(self.widths[-1], strides=self.final_stride if i == 0 else 1,
                           dtype=self.dtype, name=f"post_res{i + 1}")(x, train=train)
        x = nn.relu(norm("final_bn")(x))
        return classifier_head(x, self.num_classes, name="fc", pool=True, dtype=self.dtype)


@register_model(crop_pct=0.875)
def residual_attention_56(**kwargs):
    """Attention-56: one attention module per stage; 31.9M parameters in the paper."""
    return ResidualAttentionNet(**dict(dict(modules=(1, 1, 1)), **kwargs))


@register_model(crop_pct=0.875)
def residual_attention_92(**kwargs):
    """Attention-92: 1, 2 and 3 attention modules per stage; 51.3M parameters in the paper."""
    return ResidualAttentionNet(**dict(dict(modules=(1, 2, 3)), **kwargs))


_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)


@register_model(**_CIFAR)
def residual_attention_92_cifar(**kwargs):
    """Attention-92 for 32x32 CIFAR images with the widths of pre-activation ResNet-164:
    a 3x3 stem (16 channels) at full resolution, attention stages (1, 2, 3 modules) of
    widths 64, 128, 256 at 32, 16 and 8 pixels with 2, 1 and 1 mask poolings, and three
    256-wide units at 8 pixels.  2.33M parameters; the paper reports 1.9M for its CIFAR
    Attention-92 but gives no layer table for it, so this is a reading, not a copy."""
    return ResidualAttentionNet(**dict(dict(
        modules=(1, 2, 3), widths=(64, 128, 256, 256), num_pools=(2, 1, 1), stem="cifar",
        stem_width=16, final_stride=1, num_classes=10), **kwargs))


@register_model(**_CIFAR)
def test_residual_attention(**kwargs):
    return ResidualAttentionNet(**dict(dict(
        modules=(1, 1), widths=(8, 16, 16), num_pools=(2, 1), stem="cifar", stem_width=4,
        final_units=1, num_classes=10), **kwargs))


__all__ = ["AttentionModule", "PreActUnit", "ResidualAttentionNet", "attention_residual",
           "interp_matrix", "upsample_bilinear"]
