"""Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi, 2017) as timm's ``inception_v4``.

Stem (299 -> 35x35x384), 4 x Inception-A, Reduction-A (-> 17x17x1024), 7 x Inception-B,
Reduction-B (-> 8x8x1536), 3 x Inception-C, global average pooling and a linear classifier.
All convolutions are conv-BN(eps 1e-3)-ReLU; the average pools inside the modules exclude
the padding from the mean (timm's ``count_include_pad=False``).  Names follow timm's
``features.<i>`` Sequential (``features_<i>``); the smallest valid input is 75x75.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv_bn import ConvBN
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.models.inception_v3 import InceptionClassifier, Mixed, scaled
from jaxvision.registry import INCEPTION_MEAN, INCEPTION_STD, register_model

C = lambda c, k=1, s=1, p=0: (c, k, s, p)  # noqa: E731  (a ConvBN in a branch spec)

MIXED_4A = ([C(64), C(96, 3)],
            [C(64), C(64, (1, 7), 1, (0, 3)), C(64, (7, 1), 1, (3, 0)), C(96, 3)])
INCEPTION_A = ([C(96)], [C(64), C(96, 3, 1, 1)], [C(64), C(96, 3, 1, 1), C(96, 3, 1, 1)],
               ["avg", C(96)])
REDUCTION_A = ([C(384, 3, 2)], [C(192), C(224, 3, 1, 1), C(256, 3, 2)], ["max"])
INCEPTION_B = ([C(384)],
               [C(192), C(224, (1, 7), 1, (0, 3)), C(256, (7, 1), 1, (3, 0))],
               [C(192), C(192, (7, 1), 1, (3, 0)), C(224, (1, 7), 1, (0, 3)),
                C(224, (7, 1), 1, (3, 0)), C(256, (1, 7), 1, (0, 3))],
               ["avg", C(128)])
REDUCTION_B = ([C(192), C(192, 3, 2)],
               [C(256), C(256, (1, 7), 1, (0, 3)), C(320, (7, 1), 1, (3, 0)), C(320, 3, 2)],
               ["max"])


class InceptionV4C(nn.Module):
    """8x8 Inception-C module: its two split branches (1x3 and 3x1 in parallel) do not fit
    the plain branch list, so it is written out."""

    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        def cbn(c, k, p, name):
            return ConvBN(scaled(c, self.width_mult), k, 1, p, eps=self.eps, dtype=self.dtype,
                          name=name)
        b0 = cbn(256, 1, 0, "branch0")(x, train)
        b1 = cbn(384, 1, 0, "branch1_0")(x, train)
        b1 = jnp.concatenate([cbn(256, (1, 3), (0, 1), "branch1_1a")(b1, train),
                              cbn(256, (3, 1), (1, 0), "branch1_1b")(b1, train)], axis=-1)
        b2 = cbn(384, 1, 0, "branch2_0")(x, train)
        b2 = cbn(448, (3, 1), (1, 0), "branch2_1")(b2, train)
        b2 = cbn(512, (1, 3), (0, 1), "branch2_2")(b2, train)
        b2 = jnp.concatenate([cbn(256, (1, 3), (0, 1), "branch2_3a")(b2, train),
                              cbn(256, (3, 1), (1, 0), "branch2_3b")(b2, train)], axis=-1)
        b3 = cbn(256, 1, 0, "branch3_1")(avg_pool(x, 3, 1, 1, count_include_pad=False), train)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class _Pair(nn.Module):
    """timm's Mixed3a / Mixed5a: a 3x3/2 ConvBN named ``conv`` beside a 3x3/2 max-pool."""

    features: int
    conv_first: bool
    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = ConvBN(scaled(self.features, self.width_mult), 3, 2, eps=self.eps,
                   dtype=self.dtype, name="conv")(x, train)
        p = max_pool(x, 3, 2)
        return jnp.concatenate([c, p] if self.conv_first else [p, c], axis=-1)


class InceptionV4(InceptionClassifier):
    """Inception-v4; ``repeats`` = number of Inception-A, -B, -C modules (4, 7, 3)."""

    repeats: tuple = (4, 7, 3)

    arch = "inception_v4"
    head_name = "last_linear"

    def features(self, x, train: bool):
        kw, cbn = self.block_kwargs, self.conv_bn
        x = cbn(32, 3, 2, name="features_0")(x, train)
        x = cbn(32, 3, name="features_1")(x, train)
        x = cbn(64, 3, 1, 1, name="features_2")(x, train)
        x = _Pair(96, conv_first=False, **kw, name="features_3")(x, train)
        x = Mixed(MIXED_4A, **kw, name="features_4")(x, train)
        x = _Pair(192, conv_first=True, **kw, name="features_5")(x, train)
        i = 6
        plan = ([INCEPTION_A] * self.repeats[0] + [REDUCTION_A]
                + [INCEPTION_B] * self.repeats[1] + [REDUCTION_B])
        for spec in plan:
            x = Mixed(spec, **kw, name=f"features_{i}")(x, train)
            i += 1
        for _ in range(self.repeats[2]):
            x = InceptionV4C(**kw, name=f"features_{i}")(x, train)
            i += 1
        return x


@register_model(input_size=(299, 299, 3), num_classes=1000, mean=INCEPTION_MEAN,
                std=INCEPTION_STD, crop_pct=0.875)
def inception_v4(**kwargs):
    return InceptionV4(**kwargs)


__all__ = ["InceptionV4", "InceptionV4C"]
