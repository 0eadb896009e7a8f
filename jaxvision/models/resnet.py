"""ResNet family: ResNet, ResNet-D, Wide ResNet-50/101, ResNeXt, SE-ResNe(X)t, SENet-154,
CBAM-ResNet and the CIFAR ResNets, as one parametric :class:`ResNet`.

Papers:
* He et al., 2016, "Deep Residual Learning for Image Recognition" (ImageNet and CIFAR nets).
* He et al., 2019, "Bag of Tricks for Image Classification with CNNs" (deep stem, avg-pool
  shortcut: the ``*d`` variants).
* Xie et al., 2017, "Aggregated Residual Transformations for Deep Neural Networks" (ResNeXt).
* Zagoruyko & Komodakis, 2016, "Wide Residual Networks" (``wide_resnet50_2``).
* Hu et al., 2018, "Squeeze-and-Excitation Networks" (SE-ResNet, SENet-154).
* Woo et al., 2018, "CBAM: Convolutional Block Attention Module".

The layout follows timm's ``resnet.py`` ("v1.5": the stride of a bottleneck sits on its 3x3
convolution) so parameter counts and torch weights match exactly; module names mirror timm's
state-dict keys (``layer1_0/conv1`` <-> ``layer1.0.conv1``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.attention import CBAM, SqueezeExcite
from jaxvision.layers.conv import Conv, he_normal_fan_out, pad
from jaxvision.layers.drop import DropPath, linear_drop_path_rates
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    register_model,
)

ATTN_TYPES = (None, "se", "cbam")
STEM_TYPES = ("", "deep", "deep_tiered", "cifar")
SHORTCUT_TYPES = ("A", "B")


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding of a torch convolution that keeps ``ceil(n / stride)`` outputs."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class _ResidualBlock(nn.Module):
    """Shared pieces of the ResNet blocks: shortcut, attention, drop path."""

    planes: int
    stride: int = 1
    downsample: str | None = None  # None (identity), 'conv', 'avg' or 'A' (zero padding)
    down_kernel_size: int = 1
    cardinality: int = 1
    base_width: int = 64
    reduce_first: int = 1
    attn: str | None = None
    attn_kwargs: dict | None = None
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    dtype: Any = jnp.float32

    def _layers(self, train: bool):
        conv = partial(Conv, use_bias=False, kernel_init=he_normal_fan_out, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)
        return conv, norm

    def _shortcut(self, x, out_ch: int, train: bool):
        conv, norm = self._layers(train)
        s = self.stride
        if self.downsample is None:
            return x
        if self.downsample == "A":
            # Option A of He et al. (2016): subsample, then zero-pad the new channels;
            # a parameter-free shortcut.
            x = x[:, ::s, ::s, :]
            extra = out_ch - x.shape[-1]
            return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        if self.downsample == "avg":
            if s > 1:
                x = avg_pool(x, 2, s, ceil_mode=True, count_include_pad=False)
            x = conv(out_ch, (1, 1), name="downsample_conv")(x)
        elif self.downsample == "conv":
            k = 1 if s == 1 else self.down_kernel_size
            x = conv(out_ch, (k, k), strides=(s, s), padding=pad(get_padding(k, s)),
                     name="downsample_conv")(x)
        else:
            raise ValueError(f"unknown downsample {self.downsample!r}; use None, 'conv', "
                             "'avg' or 'A'")
        return norm(name="downsample_bn")(x)

    def _attend(self, x, train: bool):
        kw = dict(self.attn_kwargs or {})
        if self.attn is None:
            return x
        if self.attn == "se":
            return SqueezeExcite(dtype=self.dtype, name="se", **kw)(x, train=train)
        if self.attn == "cbam":
            return CBAM(dtype=self.dtype, name="cbam", **kw)(x, train=train)
        raise ValueError(f"unknown attention {self.attn!r}; choose one of {ATTN_TYPES}")

    def _merge(self, branch, shortcut, train: bool):
        branch = DropPath(self.drop_path_rate, name="drop_path")(branch, deterministic=not train)
        return nn.relu(branch + shortcut)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets)."""

    expansion = 1

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.cardinality != 1 or self.base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        conv, norm = self._layers(train)
        first = self.planes // self.reduce_first
        out_ch = self.planes * self.expansion
        y = conv(first, (3, 3), strides=(self.stride,) * 2, padding=pad(1), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(out_ch, (3, 3), padding=pad(1), name="conv2")(y)
        # Zero-init of the last BN makes every block start as the identity (Goyal et al., 2017).
        y = norm(scale_init=nn.initializers.zeros if self.zero_init_last else
                 nn.initializers.ones, name="bn2")(y)
        y = self._attend(y, train)
        return self._merge(y, self._shortcut(x, out_ch, train), train)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt, carries the stride), 1x1 expand by 4."""

    expansion = 4

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        conv, norm = self._layers(train)
        width = int(math.floor(self.planes * (self.base_width / 64)) * self.cardinality)
        first = width // self.reduce_first
        out_ch = self.planes * self.expansion
        y = conv(first, (1, 1), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(width, (3, 3), strides=(self.stride,) * 2, padding=pad(1),
                 feature_group_count=self.cardinality, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(out_ch, (1, 1), name="conv3")(y)
        y = norm(scale_init=nn.initializers.zeros if self.zero_init_last else
                 nn.initializers.ones, name="bn3")(y)
        y = self._attend(y, train)
        return self._merge(y, self._shortcut(x, out_ch, train), train)


class ResNet(nn.Module):
    """ResNet / ResNeXt / SE-ResNeXt / SENet / CBAM-ResNet / CIFAR ResNet.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
      block: :class:`BasicBlock` or :class:`Bottleneck`.
      channels: ``planes`` of each stage (block output is ``planes * block.expansion``).
      cardinality, base_width: ResNeXt grouping; bottleneck width is
        ``floor(planes * base_width / 64) * cardinality``.
      stem_type: '' (7x7/2 conv + 3x3/2 max-pool), 'deep' (three 3x3 convs of
        stem_width, stem_width, 2*stem_width + max-pool), 'deep_tiered' (3/4*stem_width,
        stem_width, 2*stem_width), 'cifar' (one 3x3/1 conv, no pooling).
      avg_down: average-pool then 1x1 conv in projection shortcuts (ResNet-D).
      down_kernel_size: kernel of strided projection shortcuts (3 in SENet-154).
      block_reduce_first: divides the width of a block's first conv (2 in SENet-154).
      shortcut_type: 'B' projection shortcuts, or 'A' zero-padding identity shortcuts.
      attn, attn_kwargs: None, 'se' or 'cbam' after the last BN of every block.
      drop_rate: dropout before the classifier.  drop_path_rate: stochastic depth, rising
        linearly from 0 at the first block to this value at the last.
      zero_init_last: initialise the last BN scale of every block to zero.
      num_classes: classifier outputs; 0 returns the pooled features.
    """

    stage_sizes: Sequence[int]
    block: Any = BasicBlock
    channels: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 1000
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    stem_type: str = ""
    avg_down: bool = False
    down_kernel_size: int = 1
    block_reduce_first: int = 1
    shortcut_type: str = "B"
    attn: str | None = None
    attn_kwargs: dict | None = None
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    zero_init_last: bool = True
    dtype: Any = jnp.float32

    def _check(self):
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"unknown stem_type {self.stem_type!r}; choose one of {STEM_TYPES}")
        if self.shortcut_type not in SHORTCUT_TYPES:
            raise ValueError(f"unknown shortcut_type {self.shortcut_type!r}; "
                             f"choose one of {SHORTCUT_TYPES}")
        if self.attn not in ATTN_TYPES:
            raise ValueError(f"unknown attn {self.attn!r}; choose one of {ATTN_TYPES}")
        if len(self.stage_sizes) != len(self.channels):
            raise ValueError(f"stage_sizes {tuple(self.stage_sizes)} and channels "
                             f"{tuple(self.channels)} must have the same length")
        if self.block not in (BasicBlock, Bottleneck):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {self.block!r}")

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        self._check()
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC input, got shape {x.shape}")
        conv = partial(Conv, use_bias=False, kernel_init=he_normal_fan_out, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)

        # ---- stem ------------------------------------------------------------------
        sw = self.stem_width
        if self.stem_type.startswith("deep"):
            c0, c1 = (3 * (sw // 4), sw) if "tiered" in self.stem_type else (sw, sw)
            inplanes = 2 * sw
            # Names follow the positions inside timm's nn.Sequential ``conv1``.
            x = conv(c0, (3, 3), strides=(2, 2), padding=pad(1), name="conv1_0")(x)
            x = nn.relu(norm(name="conv1_1")(x))
            x = conv(c1, (3, 3), padding=pad(1), name="conv1_3")(x)
            x = nn.relu(norm(name="conv1_4")(x))
            x = conv(inplanes, (3, 3), padding=pad(1), name="conv1_6")(x)
        elif self.stem_type == "cifar":
            inplanes = sw
            x = conv(inplanes, (3, 3), padding=pad(1), name="conv1")(x)
        else:
            inplanes = sw
            x = conv(inplanes, (7, 7), strides=(2, 2), padding=pad(3), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        if self.stem_type != "cifar":
            x = max_pool(x, 3, 2, 1)  # tap-by-tap gradient: fast on CPU

        # ---- residual stages -------------------------------------------------------------
        dprs = linear_drop_path_rates(self.drop_path_rate, sum(self.stage_sizes))
        idx = 0
        for i, (n, planes) in enumerate(zip(self.stage_sizes, self.channels)):
            stride = 1 if i == 0 else 2
            out_ch = planes * self.block.expansion
            if stride != 1 or inplanes != out_ch:
                down = "A" if self.shortcut_type == "A" else ("avg" if self.avg_down else "conv")
            else:
                down = None
            for j in range(n):
                x = self.block(
                    planes=planes, stride=stride if j == 0 else 1,
                    downsample=down if j == 0 else None,
                    down_kernel_size=self.down_kernel_size, cardinality=self.cardinality,
                    base_width=self.base_width, reduce_first=self.block_reduce_first,
                    attn=self.attn, attn_kwargs=self.attn_kwargs, drop_path_rate=dprs[idx],
                    zero_init_last=self.zero_init_last, dtype=self.dtype,
                    name=f"layer{i + 1}_{j}")(x, train=train)
                idx += 1
            inplanes = out_ch

        # ---- head ------------------------------------------------------------------------
        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.drop_rate, pool=True, dtype=self.dtype)


# ---------------------------------------------------------------------------------------
# Named variants.  Data contracts are timm's default pretrained_cfg of the same name.
# ---------------------------------------------------------------------------------------
_IMNET = dict(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)
_D = dict(stem_width=32, stem_type="deep", avg_down=True)  # ResNet-D (Bag of Tricks)
_SE = dict(attn="se")
_CBAM = dict(attn="cbam")


def _resnet(stage_sizes, block, defaults, kwargs):
    return ResNet(stage_sizes=stage_sizes, block=block, **dict(defaults, **kwargs))


@register_model(**_IMNET, crop_pct=0.95)
def resnet18(**kwargs):
    return _resnet((2, 2, 2, 2), BasicBlock, {}, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnet18d(**kwargs):
    return _resnet((2, 2, 2, 2), BasicBlock, _D, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnet34(**kwargs):
    return _resnet((3, 4, 6, 3), BasicBlock, {}, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnet34d(**kwargs):
    return _resnet((3, 4, 6, 3), BasicBlock, _D, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnet50(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, {}, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnet50d(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, _D, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnet101(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, {}, kwargs)


@register_model(**dict(_IMNET, input_size=(256, 256, 3)), crop_pct=0.95)
def resnet101d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, _D, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnet152(**kwargs):
    return _resnet((3, 8, 36, 3), Bottleneck, {}, kwargs)


@register_model(**dict(_IMNET, input_size=(256, 256, 3)), crop_pct=0.95)
def resnet152d(**kwargs):
    return _resnet((3, 8, 36, 3), Bottleneck, _D, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def wide_resnet50_2(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, dict(base_width=128), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def wide_resnet101_2(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(base_width=128), kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnext50_32x4d(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, dict(cardinality=32, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnext101_32x4d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(cardinality=32, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnext101_32x8d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(cardinality=32, base_width=8), kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnext101_64x4d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(cardinality=64, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnet18(**kwargs):
    return _resnet((2, 2, 2, 2), BasicBlock, _SE, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnet34(**kwargs):
    return _resnet((3, 4, 6, 3), BasicBlock, _SE, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def seresnet50(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, _SE, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnet101(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, _SE, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnet152(**kwargs):
    return _resnet((3, 8, 36, 3), Bottleneck, _SE, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnext50_32x4d(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, dict(_SE, cardinality=32, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnext101_32x4d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(_SE, cardinality=32, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def seresnext101_32x8d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(_SE, cardinality=32, base_width=8), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def seresnext101_64x4d(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, dict(_SE, cardinality=64, base_width=4), kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def senet154(**kwargs):
    """SENet-154 (Hu et al., 2018): 64x4d SE-ResNeXt-152 with a deep 64-64-128 stem, halved
    first 1x1 convolutions and 3x3 strided projection shortcuts."""
    return _resnet((3, 8, 36, 3), Bottleneck,
                   dict(_SE, cardinality=64, base_width=4, stem_type="deep",
                        down_kernel_size=3, block_reduce_first=2), kwargs)


# CBAM (Woo et al., 2018): no timm counterpart; the counts match the paper's table
# (ResNet18+CBAM 11.78M, ResNet34 21.96M, ResNet50 28.09M, ResNet101 49.33M).
@register_model(**_IMNET, crop_pct=0.875)
def cbam_resnet18(**kwargs):
    return _resnet((2, 2, 2, 2), BasicBlock, _CBAM, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def cbam_resnet34(**kwargs):
    return _resnet((3, 4, 6, 3), BasicBlock, _CBAM, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def cbam_resnet50(**kwargs):
    return _resnet((3, 4, 6, 3), Bottleneck, _CBAM, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def cbam_resnet101(**kwargs):
    return _resnet((3, 4, 23, 3), Bottleneck, _CBAM, kwargs)


# CIFAR ResNets of He et al. (2016), Sec. 4.2: 6n+2 layers, 16/32/64 channels, option A
# shortcuts.  Paper: ResNet-20 0.27M, 32 0.46M, 44 0.66M, 56 0.85M, 110 1.7M, 1202 19.4M.
_CIFAR_RESNET = dict(channels=(16, 32, 64), stem_type="cifar", stem_width=16,
                     shortcut_type="A", num_classes=10, zero_init_last=False)


def _cifar_resnet(depth, kwargs):
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return _resnet((n, n, n), BasicBlock, _CIFAR_RESNET, kwargs)


@register_model(**_CIFAR)
def resnet20_cifar(**kwargs):
    return _cifar_resnet(20, kwargs)


@register_model(**_CIFAR)
def resnet32_cifar(**kwargs):
    return _cifar_resnet(32, kwargs)


@register_model(**_CIFAR)
def resnet44_cifar(**kwargs):
    return _cifar_resnet(44, kwargs)


@register_model(**_CIFAR)
def resnet56_cifar(**kwargs):
    return _cifar_resnet(56, kwargs)


@register_model(**_CIFAR)
def resnet110_cifar(**kwargs):
    return _cifar_resnet(110, kwargs)


@register_model(**_CIFAR)
def resnet1202_cifar(**kwargs):
    return _cifar_resnet(1202, kwargs)


# Tiny variants for CPU tests (a few thousand parameters, 32x32 input).
_TINY = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
             crop_pct=1.0)
_TINY_ARGS = dict(channels=(8, 16), num_classes=10, zero_init_last=False)


@register_model(**_TINY)
def test_resnet(**kwargs):
    return _resnet((1, 1), BasicBlock, dict(_TINY_ARGS, stem_width=8, drop_rate=0.1), kwargs)


@register_model(**_TINY)
def test_resnet_bottleneck(**kwargs):
    return _resnet((1, 1), Bottleneck,
                   dict(_TINY_ARGS, channels=(4, 8), stem_width=4, stem_type="deep",
                        avg_down=True, drop_path_rate=0.1), kwargs)


@register_model(**_TINY)
def test_resnet_cifar(**kwargs):
    return _resnet((1, 1), BasicBlock,
                   dict(_TINY_ARGS, stem_type="cifar", stem_width=8, shortcut_type="A"), kwargs)


@register_model(**_TINY)
def test_seresnext(**kwargs):
    return _resnet((1, 1), Bottleneck,
                   dict(_TINY_ARGS, channels=(4, 8), stem_width=8, cardinality=4, base_width=16,
                        attn="se", attn_kwargs=dict(rd_divisor=1, rd_ratio=0.25)), kwargs)


@register_model(**_TINY)
def test_cbam_resnet(**kwargs):
    return _resnet((1, 1), BasicBlock,
                   dict(_TINY_ARGS, stem_width=8, attn="cbam",
                        attn_kwargs=dict(rd_ratio=0.25)), kwargs)
