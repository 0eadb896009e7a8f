"""VGG networks (Simonyan & Zisserman, 2015): configurations A, A-LRN, B, C, D and E.

All convolutions are 3x3 (stride 1, padding 1) except configuration C's 1x1 layers;
2x2/2 max-pooling separates five stages of 64, 128, 256, 512, 512 channels.  A-LRN adds local
response normalisation (k=2, n=5, alpha=1e-4, beta=0.75) after the first layer.

The classifier is written the way the paper evaluates it densely at test time (and as timm
stores it): FC-4096 as a 7x7 convolution, FC-4096 as a 1x1 convolution, global average
pooling of the resulting class-score map, FC-1000.  Maps smaller than 7x7 are first
average-pooled adaptively up to 7x7, so small inputs work; for inputs up to 255 pixels this
is exactly torchvision's ``AdaptiveAvgPool2d(7) -> Linear`` classifier, and the parameter
counts are those of timm/torchvision.

Variables are named after timm's module indices (``features_<i>`` for ``features.<i>``) so that
converted state dicts map one to one.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv, pad
from jaxvision.layers.activations import create_act
from jaxvision.layers.head import classifier_head
from jaxvision.layers.lrn import LocalResponseNorm
from jaxvision.layers.pooling import adaptive_avg_pool, max_pool
from jaxvision.registry import IMAGENET_MEAN, IMAGENET_STD, register_model

# An int is a 3x3 conv with that many channels, 'M' a 2x2 max-pool, 'L' an LRN layer,
# ('1', c) a 1x1 conv (configuration C).
LayerSpec = Union[int, str, tuple]

CFGS: dict[str, list[LayerSpec]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "L", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("1", 256), "M", 512, 512, ("1", 512), "M",
          512, 512, ("1", 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG from a layer list (see ``CFGS``); ``batch_norm`` adds BN after every conv."""

    cfg: Sequence[LayerSpec] = tuple(CFGS["D"])
    num_classes: int = 1000
    batch_norm: bool = False
    head_hidden: int = 4096
    dropout_rate: float = 0.5
    act_layer: Any = "relu"
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        act = lambda i: create_act(self.act_layer, f"act_{i}", self.dtype)  # noqa: E731
        i = 0  # timm's index in `features`: conv, [bn], act per conv layer, one per pool
        for v in self.cfg:
            if v == "M":
                x = max_pool(x, 2, 2)
                i += 1
            elif v == "L":
                x = LocalResponseNorm(5, 1e-4, 0.75, 2.0, dtype=self.dtype, name=f"lrn_{i}")(x)
            else:
                k, c = (1, int(v[1])) if isinstance(v, tuple) else (3, int(v))
                x = Conv(c, (k, k), padding=pad(k // 2), dtype=self.dtype,
                         name=f"features_{i}")(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=self.bn_eps, dtype=self.dtype,
                                     name=f"features_{i + 1}")(x)
                    i += 1
                x = act(i + 1)(x)
                i += 2
        # Pre-logits: FC layers as convolutions (the paper's dense evaluation).
        h, w = x.shape[1:3]
        if h < 7 or w < 7:
            x = adaptive_avg_pool(x, (max(7, h), max(7, w)))
        x = Conv(self.head_hidden, (7, 7), padding="VALID", dtype=self.dtype,
                 name="pre_logits_fc1")(x)
        x = act("fc1")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = Conv(self.head_hidden, (1, 1), dtype=self.dtype, name="pre_logits_fc2")(x)
        x = act("fc2")(x)
        return classifier_head(x, self.num_classes, name="head_fc", train=train,
                               drop_rate=self.dropout_rate, pool=True, dtype=self.dtype)


def _vgg(cfg: str, bn: bool = False, **kwargs):
    return VGG(**dict(dict(cfg=tuple(CFGS[cfg]), batch_norm=bn), **kwargs))


_IMNET = dict(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN, std=IMAGENET_STD,
              crop_pct=0.875)


@register_model(**_IMNET)
def vgg11(**kwargs):
    """Configuration A (11 weight layers)."""
    return _vgg("A", **kwargs)


@register_model(**_IMNET)
def vgg11_lrn(**kwargs):
    """Configuration A-LRN: A with LRN after the first layer."""
    return _vgg("A-LRN", **kwargs)


@register_model(**_IMNET)
def vgg13(**kwargs):
    """Configuration B (13 weight layers)."""
    return _vgg("B", **kwargs)


@register_model(**_IMNET)
def vgg16_c(**kwargs):
    """Configuration C: B plus one 1x1 conv in each of stages 3, 4 and 5 (16 weight layers)."""
    return _vgg("C", **kwargs)


@register_model(**_IMNET)
def vgg16(**kwargs):
    """Configuration D (16 weight layers)."""
    return _vgg("D", **kwargs)


@register_model(**_IMNET)
def vgg19(**kwargs):
    """Configuration E (19 weight layers)."""
    return _vgg("E", **kwargs)


@register_model(**_IMNET)
def vgg11_bn(**kwargs):
    return _vgg("A", True, **kwargs)


@register_model(**_IMNET)
def vgg13_bn(**kwargs):
    return _vgg("B", True, **kwargs)


@register_model(**_IMNET)
def vgg16_bn(**kwargs):
    return _vgg("D", True, **kwargs)


@register_model(**_IMNET)
def vgg19_bn(**kwargs):
    return _vgg("E", True, **kwargs)


@register_model(input_size=(32, 32, 3), num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                crop_pct=1.0)
def test_vgg(**kwargs):
    """A tiny configuration with LRN, a 1x1 conv and BN, to exercise every layer kind."""
    return VGG(**dict(dict(num_classes=10, cfg=(4, "L", "M", 8, ("1", 8), "M", 8, "M"),
                           batch_norm=True, head_hidden=16, act_layer="prelu"), **kwargs))


__all__ = ["CFGS", "VGG"]
