"""Pre-activation ResNet ("ResNet v2"; He et al., 2016, "Identity Mappings in Deep Residual
Networks"): every block is BN-ReLU-Conv, the shortcut path carries no nonlinearity, and one
final BN-ReLU precedes the pooled classifier.

The ImageNet variants follow timm's ``resnetv2.py`` with ``BatchNormAct2d`` and plain
convolutions (timm's ``resnetv2_50`` etc.; the stride sits on the 3x3 convolution of a
bottleneck, and the projection shortcut reads the pre-activated input).  Module names mirror
timm's state-dict keys (``stages_1_0/conv2`` <-> ``stages.1.blocks.0.conv2``).

The CIFAR variants are the paper's pre-activation ResNet-164 and ResNet-1001: a 3x3 stem of
16 channels and three stages of bottleneck blocks with outputs 64/128/256.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, he_normal_fan_out, pad
from jaxvision.layers.drop import DropPath, linear_drop_path_rates
from jaxvision.layers.head import classifier_head
from jaxvision.layers.helpers import make_divisible
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.models.resnet import get_padding
from jaxvision.registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    register_model,
)

STEM_TYPES = ("", "deep", "cifar")


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al., 2016, "Identity Mappings").

    ``bottleneck=True``: BN-ReLU-1x1, BN-ReLU-3x3 (stride, groups), BN-ReLU-1x1 with
    ``mid = make_divisible(out_chs * bottle_ratio)``.  ``bottleneck=False``: two 3x3
    convolutions (BN-ReLU-3x3 (stride), BN-ReLU-3x3).  ``project`` adds a 1x1 projection
    (optionally average-pooled first) applied to the pre-activated input.
    """

    out_chs: int
    stride: int = 1
    bottleneck: bool = True
    bottle_ratio: float = 0.25
    groups: int = 1
    project: bool = False
    avg_down: bool = False
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        conv = partial(Conv, use_bias=False, kernel_init=he_normal_fan_out, dtype=self.dtype)
        norm_act = lambda name: (lambda v: nn.relu(nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
            name=name)(v)))
        s = self.stride
        x_preact = norm_act("norm1")(x)

        shortcut = x
        if self.project:
            if self.avg_down:
                v = (avg_pool(x_preact, 2, s, ceil_mode=True, count_include_pad=False) if s > 1
                     else x_preact)
                shortcut = conv(self.out_chs, (1, 1), name="downsample_conv")(v)
            else:
                shortcut = conv(self.out_chs, (1, 1), strides=(s, s),
                                name="downsample_conv")(x_preact)

        mid = make_divisible(self.out_chs * self.bottle_ratio)
        if self.bottleneck:
            y = conv(mid, (1, 1), name="conv1")(x_preact)
            y = conv(mid, (3, 3), strides=(s, s), padding=pad(get_padding(3, s)),
                     feature_group_count=self.groups, name="conv2")(norm_act("norm2")(y))
            y = conv(self.out_chs, (1, 1), name="conv3")(norm_act("norm3")(y))
        else:
            y = conv(mid, (3, 3), strides=(s, s), padding=pad(get_padding(3, s)),
                     feature_group_count=self.groups, name="conv1")(x_preact)
            y = conv(self.out_chs, (3, 3), padding=pad(1), feature_group_count=self.groups,
                     name="conv2")(norm_act("norm2")(y))
        y = DropPath(self.drop_path_rate, name="drop_path")(y, deterministic=not train)
        return y + shortcut


class ResNetV2(nn.Module):
    """Pre-activation ResNet.

    Attributes:
      stage_sizes: blocks per stage.
      channels: output channels of each stage (before ``width_factor``).
      basic: two-3x3 blocks instead of bottlenecks (timm's ``PreActBasic``).
      bottle_ratio: bottleneck width / output width (1.0 for basic blocks).
      stem_type: '' (7x7/2 conv + 3x3/2 max-pool), 'deep' (3x3 convs of stem_chs/2,
        stem_chs/2, stem_chs + max-pool) or 'cifar' (one 3x3/1 conv, no pooling).
      avg_down: average pooling in projection shortcuts.
      drop_rate: dropout before the classifier; drop_path_rate: stochastic depth, linear in
        block index from 0 to this value.
      num_classes: classifier outputs; 0 returns the pooled features.
    """

    stage_sizes: Sequence[int]
    channels: Sequence[int] = (256, 512, 1024, 2048)
    num_classes: int = 1000
    basic: bool = False
    bottle_ratio: float = 0.25
    width_factor: int = 1
    stem_chs: int = 64
    stem_type: str = ""
    avg_down: bool = False
    groups: int = 1
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"unknown stem_type {self.stem_type!r}; choose one of {STEM_TYPES}")
        if len(self.stage_sizes) != len(self.channels):
            raise ValueError(f"stage_sizes {tuple(self.stage_sizes)} and channels "
                             f"{tuple(self.channels)} must have the same length")
        if x.ndim != 4:
            raise ValueError(f"ResNetV2 expects NHWC input, got shape {x.shape}")
        conv = partial(Conv, use_bias=False, kernel_init=he_normal_fan_out, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype)

        # ---- stem: convolution only; the first block pre-activates its input -----------
        stem_chs = make_divisible(self.stem_chs * self.width_factor)
        if self.stem_type == "deep":
            half = stem_chs // 2
            x = conv(half, (3, 3), strides=(2, 2), padding=pad(1), name="stem_conv1")(x)
            x = nn.relu(norm(name="stem_norm1")(x))
            x = conv(half, (3, 3), padding=pad(1), name="stem_conv2")(x)
            x = nn.relu(norm(name="stem_norm2")(x))
            x = conv(stem_chs, (3, 3), padding=pad(1), name="stem_conv3")(x)
        elif self.stem_type == "cifar":
            x = conv(stem_chs, (3, 3), padding=pad(1), name="stem_conv")(x)
        else:
            x = conv(stem_chs, (7, 7), strides=(2, 2), padding=pad(3), name="stem_conv")(x)
        if self.stem_type != "cifar":
            x = max_pool(x, 3, 2, 1)  # tap-by-tap gradient: fast on CPU

        # ---- stages ----------------------------------------------------------------------
        dprs = linear_drop_path_rates(self.drop_path_rate, sum(self.stage_sizes))
        prev, idx = stem_chs, 0
        for i, (n, c) in enumerate(zip(self.stage_sizes, self.channels)):
            out_chs = make_divisible(c * self.width_factor)
            stride = 1 if i == 0 else 2
            for j in range(n):
                s = stride if j == 0 else 1
                # timm always projects in the first bottleneck of a stage; a basic block
                # projects only when the shape changes.
                project = j == 0 and (not self.basic or s != 1 or prev != out_chs)
                x = PreActBlock(out_chs, s, bottleneck=not self.basic,
                                bottle_ratio=self.bottle_ratio, groups=self.groups,
                                project=project, avg_down=self.avg_down,
                                drop_path_rate=dprs[idx], dtype=self.dtype,
                                name=f"stages_{i}_{j}")(x, train=train)
                prev, idx = out_chs, idx + 1

        # ---- final BN-ReLU and head ------------------------------------------------------
        x = nn.relu(norm(name="norm")(x))
        return classifier_head(x, self.num_classes, name="head_fc", train=train,
                               drop_rate=self.drop_rate, pool=True, dtype=self.dtype)


# ---------------------------------------------------------------------------------------
# Named variants (timm's default pretrained_cfg; Inception mean/std as timm's resnetv2).
# ---------------------------------------------------------------------------------------
_IMNET = dict(input_size=(224, 224, 3), num_classes=1000, mean=INCEPTION_MEAN,
              std=INCEPTION_STD)
_BASIC = dict(channels=(64, 128, 256, 512), basic=True, bottle_ratio=1.0)


def _v2(stage_sizes, defaults, kwargs):
    return ResNetV2(stage_sizes=stage_sizes, **dict(defaults, **kwargs))


@register_model(**_IMNET, crop_pct=0.9)
def resnetv2_18(**kwargs):
    return _v2((2, 2, 2, 2), _BASIC, kwargs)


@register_model(**_IMNET, crop_pct=0.9)
def resnetv2_34(**kwargs):
    return _v2((3, 4, 6, 3), _BASIC, kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnetv2_50(**kwargs):
    return _v2((3, 4, 6, 3), {}, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnetv2_50d(**kwargs):
    return _v2((3, 4, 6, 3), dict(stem_type="deep", avg_down=True), kwargs)


@register_model(**_IMNET, crop_pct=0.95)
def resnetv2_101(**kwargs):
    return _v2((3, 4, 23, 3), {}, kwargs)


@register_model(**_IMNET, crop_pct=0.875)
def resnetv2_152(**kwargs):
    return _v2((3, 8, 36, 3), {}, kwargs)


# CIFAR pre-activation ResNets (He et al., 2016, "Identity Mappings", Table 2/3):
# depth 9n+2 with bottleneck blocks; ResNet-164 1.7M, ResNet-1001 10.2M parameters.
_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)


def _preact_cifar(depth, kwargs):
    if (depth - 2) % 9:
        raise ValueError(f"pre-activation bottleneck CIFAR ResNet depth must be 9n+2, got {depth}")
    n = (depth - 2) // 9
    return _v2((n, n, n), dict(channels=(64, 128, 256), stem_chs=16, stem_type="cifar",
                               num_classes=10), kwargs)


@register_model(**_CIFAR)
def preact_resnet164_cifar(**kwargs):
    return _preact_cifar(164, kwargs)


@register_model(**_CIFAR)
def preact_resnet1001_cifar(**kwargs):
    return _preact_cifar(1001, kwargs)


@register_model(**_CIFAR)
def test_resnetv2(**kwargs):
    return _v2((1, 1), dict(channels=(16, 32), stem_chs=8, stem_type="deep", avg_down=True,
                            num_classes=10, drop_path_rate=0.1), kwargs)


@register_model(**_CIFAR)
def test_resnetv2_basic(**kwargs):
    return _v2((1, 1), dict(channels=(8, 16), basic=True, bottle_ratio=1.0, stem_chs=8,
                            stem_type="cifar", num_classes=10), kwargs)
