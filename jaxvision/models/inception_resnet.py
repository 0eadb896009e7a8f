"""Inception-ResNet-v1 and -v2 (Szegedy, Ioffe, Vanhoucke & Alemi, 2017).

Residual Inception blocks: parallel ConvBN branches, concatenated, a linear 1x1
convolution (with bias, no BN) back to the trunk width, scaled by 0.1-0.3 before it is added
to the input ("scaling of the residuals" stabilises training), then ReLU.

* ``inception_resnet_v2``: timm's model and variable names (stem, Mixed_5b, 10 x Block35
  (scale 0.17), Mixed_6a, 20 x Block17 (0.10), Mixed_7a, 9 x Block8 (0.20) + one Block8
  without ReLU, 1x1 ConvBN to 1536, average pool, classifier).  BN eps 1e-3.
* ``inception_resnet_v1``: the paper's smaller network (Figures 10-14; no timm reference):
  stem 3x3/2 32, 3x3 32, 3x3 64, max-pool, 1x1 80, 3x3 192, 3x3/2 256 (-> 35x35x256);
  5 x Inception-ResNet-A (branches 32 / 32-32 / 32-32-32, scale 0.17); Reduction-A with
  k, l, m, n = 192, 192, 256, 384 (-> 17x17x896); 10 x Inception-ResNet-B (128 / 128-128-128
  with 1x7, 7x1; scale 0.10); Reduction-B (256-384 / 256-256 / 256-256-256, -> 8x8x1792);
  5 x Inception-ResNet-C (192 / 192-192-192 with 1x3, 3x1; scale 0.20), the last one
  without ReLU as in v2; average pooling, dropout 0.2 (keep 0.8), classifier.

The smallest valid input is 75x75.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv
from jaxvision.layers.conv_bn import ConvBN
from jaxvision.layers.pooling import max_pool
from jaxvision.models.inception_v3 import InceptionClassifier, Mixed, scaled
from jaxvision.registry import INCEPTION_MEAN, INCEPTION_STD, register_model

C = lambda c, k=1, s=1, p=0: (c, k, s, p)  # noqa: E731  (a ConvBN in a branch spec)

# ---- v2 (timm) ---------------------------------------------------------------------------
V2_MIXED_5B = ([C(96)], [C(48), C(64, 5, 1, 2)], [C(64), C(96, 3, 1, 1), C(96, 3, 1, 1)],
               ["avg", C(64)])
V2_BLOCK35 = ([C(32)], [C(32), C(32, 3, 1, 1)], [C(32), C(48, 3, 1, 1), C(64, 3, 1, 1)])
V2_MIXED_6A = ([C(384, 3, 2)], [C(256), C(256, 3, 1, 1), C(384, 3, 2)], ["max"])
V2_BLOCK17 = ([C(192)], [C(128), C(160, (1, 7), 1, (0, 3)), C(192, (7, 1), 1, (3, 0))])
V2_MIXED_7A = ([C(256), C(384, 3, 2)], [C(256), C(288, 3, 2)],
               [C(256), C(288, 3, 1, 1), C(320, 3, 2)], ["max"])
V2_BLOCK8 = ([C(192)], [C(192), C(224, (1, 3), 1, (0, 1)), C(256, (3, 1), 1, (1, 0))])

# ---- v1 (paper) --------------------------------------------------------------------------
V1_BLOCK35 = ([C(32)], [C(32), C(32, 3, 1, 1)], [C(32), C(32, 3, 1, 1), C(32, 3, 1, 1)])
V1_REDUCTION_A = ([C(384, 3, 2)], [C(192), C(192, 3, 1, 1), C(256, 3, 2)], ["max"])
V1_BLOCK17 = ([C(128)], [C(128), C(128, (1, 7), 1, (0, 3)), C(128, (7, 1), 1, (3, 0))])
V1_REDUCTION_B = ([C(256), C(384, 3, 2)], [C(256), C(256, 3, 2)],
                  [C(256), C(256, 3, 1, 1), C(256, 3, 2)], ["max"])
V1_BLOCK8 = ([C(192)], [C(192), C(192, (1, 3), 1, (0, 1)), C(192, (3, 1), 1, (1, 0))])


class ResidualInception(nn.Module):
    """``act(x + scale * conv1x1(concat(branches(x))))``; the 1x1 conv is ``conv2d``."""

    branches: Sequence
    scale: float = 1.0
    relu: bool = True
    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = self._branches(x, train)
        y = Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="conv2d")(y)
        out = x + self.scale * y
        return nn.relu(out) if self.relu else out

    def _branches(self, x, train):
        # Same naming rule as Mixed, but the convs live directly in this module's scope
        # (timm: Block35.branch0.conv, Block35.branch1.0.conv, ...).
        outs = []
        for i, branch in enumerate(self.branches):
            y = x
            for j, (c, k, s, p) in enumerate(branch):
                name = f"branch{i}" if len(branch) == 1 else f"branch{i}_{j}"
                y = ConvBN(scaled(c, self.width_mult), k, s, p, eps=self.eps,
                           dtype=self.dtype, name=name)(y, train)
            outs.append(y)
        return jnp.concatenate(outs, axis=-1)


class InceptionResNet(InceptionClassifier):
    """The trunk both versions share: stem convs, A blocks, reduction, B blocks, reduction,
    C blocks (the last without ReLU).  A version gives its block tables (``blocks``: A,
    reduction A, B, reduction B, C), the end of its stem and its last 1x1 conv width."""

    blocks = ()
    last_conv = 0  # width of a final 1x1 ConvBN before the pool (0: none)

    def stem_end(self, x, train: bool):
        raise NotImplementedError

    def features(self, x, train: bool):
        kw, cbn = self.block_kwargs, self.conv_bn
        block35, reduction_a, block17, reduction_b, block8 = self.blocks
        x = cbn(32, 3, 2, name="conv2d_1a")(x, train)
        x = cbn(32, 3, name="conv2d_2a")(x, train)
        x = cbn(64, 3, 1, 1, name="conv2d_2b")(x, train)
        x = max_pool(x, 3, 2)
        x = cbn(80, 1, name="conv2d_3b")(x, train)
        x = cbn(192, 3, name="conv2d_4a")(x, train)
        x = self.stem_end(x, train)
        for j in range(self.repeats[0]):
            x = ResidualInception(block35, 0.17, **kw, name=f"repeat_{j}")(x, train)
        x = Mixed(reduction_a, **kw, name="mixed_6a")(x, train)
        for j in range(self.repeats[1]):
            x = ResidualInception(block17, 0.10, **kw, name=f"repeat_1_{j}")(x, train)
        x = Mixed(reduction_b, **kw, name="mixed_7a")(x, train)
        for j in range(self.repeats[2] - 1):
            x = ResidualInception(block8, 0.20, **kw, name=f"repeat_2_{j}")(x, train)
        x = ResidualInception(block8, 1.0, relu=False, **kw, name="block8")(x, train)
        if self.last_conv:
            x = cbn(self.last_conv, 1, name="conv2d_7b")(x, train)
        return x


class InceptionResNetV2(InceptionResNet):
    """Inception-ResNet-v2 (timm layout); ``repeats`` = Block35, Block17, Block8 counts
    (10, 20, 10; the last Block8 is ``block8``, without ReLU)."""

    repeats: tuple = (10, 20, 10)

    arch = "inception_resnet_v2"
    head_name = "classif"
    blocks = (V2_BLOCK35, V2_MIXED_6A, V2_BLOCK17, V2_MIXED_7A, V2_BLOCK8)
    last_conv = 1536

    def stem_end(self, x, train: bool):
        x = max_pool(x, 3, 2)
        return Mixed(V2_MIXED_5B, **self.block_kwargs, name="mixed_5b")(x, train)


class InceptionResNetV1(InceptionResNet):
    """Inception-ResNet-v1 of the paper; ``repeats`` = A, B, C block counts (5, 10, 5)."""

    repeats: tuple = (5, 10, 5)
    dropout_rate: float = 0.2

    arch = "inception_resnet_v1"
    head_name = "classif"
    blocks = (V1_BLOCK35, V1_REDUCTION_A, V1_BLOCK17, V1_REDUCTION_B, V1_BLOCK8)

    def stem_end(self, x, train: bool):
        return self.conv_bn(256, 3, 2, name="conv2d_4b")(x, train)


_CFG = dict(input_size=(299, 299, 3), num_classes=1000, mean=INCEPTION_MEAN, std=INCEPTION_STD)


@register_model(**_CFG, crop_pct=0.8975)
def inception_resnet_v2(**kwargs):
    return InceptionResNetV2(**kwargs)


@register_model(**_CFG, crop_pct=0.8975)
def inception_resnet_v1(**kwargs):
    return InceptionResNetV1(**kwargs)


@register_model(input_size=(75, 75, 3), num_classes=10, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                crop_pct=1.0)
def test_inception_resnet(**kwargs):
    return InceptionResNetV2(**dict(dict(num_classes=10, width_mult=1 / 32, repeats=(1, 1, 2)),
                                    **kwargs))


__all__ = ["InceptionResNet", "InceptionResNetV1", "InceptionResNetV2", "ResidualInception"]
