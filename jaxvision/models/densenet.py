"""DenseNet (Huang et al., 2017, "Densely Connected Convolutional Networks").

Inside a dense block every layer receives the concatenation of all earlier feature maps
of the block and adds ``growth_rate`` (k) new ones.  Layers are DenseNet-B bottlenecks
(BN-ReLU-1x1 conv to ``bn_size * k`` channels, BN-ReLU-3x3 conv to k); transitions
(BN-ReLU-1x1 conv, 2x2 average pool) between blocks compress the channels by
``compression`` (DenseNet-C; 0.5 in every model here, hence "BC").

ImageNet models follow timm 1.0.31 (names, key layout, parameter counts: densenet121
7,978,856, densenet264d 72,736,216).  timm's ``BatchNormAct2d`` is BatchNorm followed by
ReLU; the final ``norm5`` is also followed by ReLU before global pooling, as in torchvision.

CIFAR models are DenseNet-BC from the paper's Table 2: a 3x3 stem convolution to 2k
channels, three dense blocks of ``(L - 4) / 6`` bottleneck layers at 32, 16 and 8 pixels,
BN-ReLU, global average pooling and a linear classifier.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, register_model

_STEMS = ("", "deep", "cifar")


def _norm_act(train: bool, dtype, name: str):
    bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)
    return lambda x: nn.relu(bn(x))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(1x1, bn_size*k)-BN-ReLU-Conv(3x3, k): one DenseNet-B layer; returns only
    the k new feature maps (the caller concatenates)."""

    growth_rate: int
    bn_size: int = 4
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = _norm_act(train, self.dtype, "norm1")(x)
        x = Conv(self.bn_size * self.growth_rate, (1, 1), use_bias=False, dtype=self.dtype,
                 name="conv1")(x)
        x = _norm_act(train, self.dtype, "norm2")(x)
        x = Conv(self.growth_rate, (3, 3), padding=pad(1), use_bias=False, dtype=self.dtype,
                 name="conv2")(x)
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al., 2017).

    ``stem_type``: ``''`` (7x7/2 conv, BN-ReLU, 3x3/2 max pool: ImageNet), ``'deep'``
    (three 3x3 convs of widths k, k, 2k, the first with stride 2, each with BN-ReLU, then the
    max pool; timm's ``densenet264d``) or ``'cifar'`` (one 3x3 conv, no norm, no pool).
    ``drop_rate`` is dropout before the classifier; ``proj_drop_rate`` after every dense
    layer (the paper's dropout 0.2 for CIFAR without augmentation).
    """

    block_config: Sequence[int] = (6, 12, 24, 16)
    growth_rate: int = 32
    bn_size: int = 4
    compression: float = 0.5
    stem_type: str = ""
    num_init_features: int | None = None  # default 2k
    num_classes: int = 1000
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.stem_type not in _STEMS:
            raise ValueError(f"DenseNet stem_type must be one of {_STEMS}, got "
                             f"{self.stem_type!r}")
        if x.ndim != 4:
            raise ValueError(f"DenseNet expects NHWC input of rank 4, got shape {x.shape}")
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(f"DenseNet compression must be in (0, 1], got {self.compression}")
        k = self.growth_rate
        init_ch = self.num_init_features or 2 * k
        conv = lambda f, ks, name, **kw: Conv(f, (ks, ks), use_bias=False,  # noqa: E731
                                              dtype=self.dtype, name=name, **kw)
        if self.stem_type == "cifar":
            x = conv(init_ch, 3, "conv0", padding=pad(1))(x)
        else:
            if self.stem_type == "deep":
                x = _norm_act(train, self.dtype, "norm0")(
                    conv(k, 3, "conv0", strides=2, padding=pad(1))(x))
                x = _norm_act(train, self.dtype, "norm1")(
                    conv(k, 3, "conv1", padding=pad(1))(x))
                x = _norm_act(train, self.dtype, "norm2")(
                    conv(init_ch, 3, "conv2", padding=pad(1))(x))
            else:
                x = _norm_act(train, self.dtype, "norm0")(
                    conv(init_ch, 7, "conv0", strides=2, padding=pad(3))(x))
            x = max_pool(x, 3, 2, 1)

        for i, n in enumerate(self.block_config):
            feats = [x]
            for j in range(n):
                inp = feats[0] if len(feats) == 1 else jnp.concatenate(feats, axis=-1)
                feats.append(DenseLayer(k, self.bn_size, self.proj_drop_rate, dtype=self.dtype,
                                        name=f"denseblock{i + 1}_denselayer{j + 1}")(
                                            inp, train=train))
            x = jnp.concatenate(feats, axis=-1)              # (B, H, W, C_in + n*k)
            if i != len(self.block_config) - 1:
                out_ch = int(x.shape[-1] * self.compression)  # floor(theta * m)
                x = _norm_act(train, self.dtype, f"transition{i + 1}_norm")(x)
                x = conv(out_ch, 1, f"transition{i + 1}_conv")(x)
                x = avg_pool(x, 2, 2)
        x = _norm_act(train, self.dtype, "norm5")(x)
        return classifier_head(x, self.num_classes, name="classifier", train=train,
                               drop_rate=self.drop_rate, pool=True, dtype=self.dtype)


def densenet_bc_cifar(depth: int, growth_rate: int, **kwargs) -> DenseNet:
    """DenseNet-BC for CIFAR with ``depth`` L: 3 blocks of (L - 4) / 6 bottleneck layers."""
    if (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must satisfy (L - 4) % 6 == 0, got {depth}")
    n = (depth - 4) // 6
    kwargs = dict(dict(num_classes=10), **kwargs)
    return DenseNet(block_config=(n, n, n), growth_rate=growth_rate, stem_type="cifar",
                    **kwargs)


_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)


@register_model(crop_pct=0.875)
def densenet121(**kwargs):
    return DenseNet(**dict(dict(growth_rate=32, block_config=(6, 12, 24, 16)), **kwargs))


@register_model(crop_pct=0.875)
def densenet169(**kwargs):
    return DenseNet(**dict(dict(growth_rate=32, block_config=(6, 12, 32, 32)), **kwargs))


@register_model(crop_pct=0.875)
def densenet201(**kwargs):
    return DenseNet(**dict(dict(growth_rate=32, block_config=(6, 12, 48, 32)), **kwargs))


@register_model(crop_pct=0.875)
def densenet161(**kwargs):
    return DenseNet(**dict(dict(growth_rate=48, block_config=(6, 12, 36, 24)), **kwargs))


@register_model(crop_pct=0.875)
def densenet264d(**kwargs):
    return DenseNet(**dict(dict(growth_rate=48, block_config=(6, 12, 64, 48), stem_type="deep"),
                           **kwargs))


@register_model(**_CIFAR)
def densenet_bc100_k12_cifar(**kwargs):
    """DenseNet-BC (L=100, k=12): 0.8M parameters in the paper."""
    return densenet_bc_cifar(100, 12, **kwargs)


@register_model(**_CIFAR)
def densenet_bc250_k24_cifar(**kwargs):
    """DenseNet-BC (L=250, k=24): 15.3M parameters in the paper."""
    return densenet_bc_cifar(250, 24, **kwargs)


@register_model(**_CIFAR)
def densenet_bc190_k40_cifar(**kwargs):
    """DenseNet-BC (L=190, k=40): 25.6M parameters in the paper."""
    return densenet_bc_cifar(190, 40, **kwargs)


@register_model(**_CIFAR)
def test_densenet(**kwargs):
    """Tiny DenseNet-BC: growth 4, blocks of 2 layers, CIFAR stem."""
    return DenseNet(**dict(dict(growth_rate=4, block_config=(2, 2, 2), stem_type="cifar",
                                num_classes=10), **kwargs))


__all__ = ["DenseLayer", "DenseNet", "densenet_bc_cifar"]
