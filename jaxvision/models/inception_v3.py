"""Inception-v3 (Szegedy et al., 2016, "Rethinking the Inception Architecture") as timm's
``inception_v3``, and BN-Inception (Ioffe & Szegedy, 2015), plus the building blocks shared
with Inception-v4 / Inception-ResNet.

Every convolution of these networks is conv (no bias) -> BatchNorm -> ReLU; timm's BN
epsilon is 1e-3 (the TensorFlow originals), used here too.  Variable names follow timm's
module names so that converted state dicts map one to one (``Mixed_5b/branch5x5_1/conv``
for ``Mixed_5b.branch5x5_1.conv``; the i-th layer of a torch ``Sequential`` ``branch1``
becomes ``branch1_i``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import optax

from jaxvision.layers.conv_bn import ConvBN
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import adaptive_avg_pool, avg_pool, global_avg_pool, max_pool
from jaxvision.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    register_model,
)

# A branch is a sequence of ops: (channels, kernel, stride, padding) for a ConvBN, or the
# strings 'max' (3x3/2 max-pool), 'maxs1' (3x3/1 pad 1 max-pool), 'avg' (3x3/1 pad 1
# average pool).
Branch = Sequence[Union[tuple, str]]


class Mixed(nn.Module):
    """Parallel branches concatenated along channels.  Submodule names follow torch: a
    branch made of one conv is ``branch{i}``, otherwise op ``j`` is ``branch{i}_{j}``."""

    branches: Sequence[Branch]
    width_mult: float = 1.0
    eps: float = 1e-3
    avg_include_pad: bool = False
    max_padding: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        outs = []
        for i, branch in enumerate(self.branches):
            y = x
            single = len(branch) == 1 and not isinstance(branch[0], str)
            for j, op in enumerate(branch):
                if op == "max":
                    y = max_pool(y, 3, 2, self.max_padding)
                elif op == "maxs1":
                    y = max_pool(y, 3, 1, 1)
                elif op == "avg":
                    y = avg_pool(y, 3, 1, 1, count_include_pad=self.avg_include_pad)
                else:
                    c, k, s, p = op
                    y = ConvBN(scaled(c, self.width_mult), k, s, p, eps=self.eps,
                               dtype=self.dtype,
                               name=f"branch{i}" if single else f"branch{i}_{j}")(y, train)
            outs.append(y)
        return jnp.concatenate(outs, axis=-1)


def scaled(c: int, mult: float) -> int:
    """Channel count ``c`` times a width multiplier (tiny test variants), at least 1."""
    return c if mult == 1.0 else max(1, int(round(c * mult)))


class InceptionClassifier(nn.Module):
    """What Inception-v4 and Inception-ResNet share: their fields, the 75x75 input check, the
    ConvBN factory and the pooled, dropped-out head.  A subclass names its architecture
    (``arch``) and head (``head_name``), sets its ``repeats``/``dropout_rate`` defaults and
    defines ``features(x, train)``, called inside this module's scope (no extra level)."""

    num_classes: int = 1000
    repeats: tuple = ()
    dropout_rate: float = 0.0
    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    arch = "inception"
    head_name = "fc"

    @property
    def block_kwargs(self) -> dict:
        return dict(width_mult=self.width_mult, eps=self.eps, dtype=self.dtype)

    def conv_bn(self, c, k, s=1, p=0, name=None):
        return ConvBN(scaled(c, self.width_mult), k, s, p, eps=self.eps, dtype=self.dtype,
                      name=name)

    def features(self, x, train: bool):
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"{self.arch} needs inputs of at least 75x75, got "
                             f"{x.shape[1]}x{x.shape[2]}")
        x = self.features(x, train)
        return classifier_head(x, self.num_classes, name=self.head_name, train=train,
                               drop_rate=self.dropout_rate, pool=True, dtype=self.dtype)


def soft_ce(logits, targets):
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                                targets.astype(jnp.float32)))


# --------------------------------------------------------------------------------------
# Inception-v3
# --------------------------------------------------------------------------------------

class InceptionV3(nn.Module):
    """Inception-v3 (timm layout).  35x35x288 -> 17x17x768 -> 8x8x2048 at 299 pixels; the
    smallest valid input is 75x75.  ``aux_logits=True`` adds timm's auxiliary classifier on
    Mixed_6e (run in training, loss ``aux_weight`` x CE sown as ``losses/aux_loss``)."""

    num_classes: int = 1000
    aux_logits: bool = False
    aux_weight: float = 0.4
    dropout_rate: float = 0.0
    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False, targets: Optional[jnp.ndarray] = None):
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"inception_v3 needs inputs of at least 75x75, got "
                             f"{x.shape[1]}x{x.shape[2]}")
        m = self.width_mult

        def cbn(c, k, s=1, p=0, name=None):
            return ConvBN(scaled(c, m), k, s, p, eps=self.eps, dtype=self.dtype, name=name)

        x = cbn(32, 3, 2, name="Conv2d_1a_3x3")(x, train)
        x = cbn(32, 3, name="Conv2d_2a_3x3")(x, train)
        x = cbn(64, 3, 1, 1, name="Conv2d_2b_3x3")(x, train)
        x = max_pool(x, 3, 2)
        x = cbn(80, 1, name="Conv2d_3b_1x1")(x, train)
        x = cbn(192, 3, name="Conv2d_4a_3x3")(x, train)
        x = max_pool(x, 3, 2)
        kw = dict(width_mult=m, eps=self.eps, dtype=self.dtype)
        for name, pf in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features=pf, **kw, name=name)(x, train)
        x = InceptionB(**kw, name="Mixed_6a")(x, train)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=c7, **kw, name=name)(x, train)
        if self.aux_logits and self.num_classes and (train or self.is_initializing()):
            aux = InceptionV3Aux(num_classes=self.num_classes, **kw, name="AuxLogits")(x, train)
            if train and targets is not None:
                self.sow("losses", "aux_loss", self.aux_weight * soft_ce(aux, targets))
        x = InceptionD(**kw, name="Mixed_7a")(x, train)
        x = InceptionE(**kw, name="Mixed_7b")(x, train)
        x = InceptionE(**kw, name="Mixed_7c")(x, train)
        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.dropout_rate, pool=True, dtype=self.dtype)


class _V3Block(nn.Module):
    width_mult: float = 1.0
    eps: float = 1e-3
    dtype: Any = jnp.float32

    def cbn(self, c, k, s=1, p=0, name=None):
        return ConvBN(scaled(c, self.width_mult), k, s, p, eps=self.eps, dtype=self.dtype,
                      name=name)


def _avg(y):
    # timm's Inception-v3 uses F.avg_pool2d's default count_include_pad=True.
    return avg_pool(y, 3, 1, 1, count_include_pad=True)


class InceptionA(_V3Block):
    """35x35 module: 1x1 / 1x1-5x5 / 1x1-3x3-3x3 / avgpool-1x1."""
    pool_features: int = 32

    @nn.compact
    def __call__(self, x, train=False):
        b1 = self.cbn(64, 1, name="branch1x1")(x, train)
        b5 = self.cbn(48, 1, name="branch5x5_1")(x, train)
        b5 = self.cbn(64, 5, 1, 2, name="branch5x5_2")(b5, train)
        b3 = self.cbn(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = self.cbn(96, 3, 1, 1, name="branch3x3dbl_2")(b3, train)
        b3 = self.cbn(96, 3, 1, 1, name="branch3x3dbl_3")(b3, train)
        bp = self.cbn(self.pool_features, 1, name="branch_pool")(_avg(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_V3Block):
    """Grid reduction 35 -> 17: 3x3/2 / 1x1-3x3-3x3/2 / max-pool."""

    @nn.compact
    def __call__(self, x, train=False):
        b3 = self.cbn(384, 3, 2, name="branch3x3")(x, train)
        bd = self.cbn(64, 1, name="branch3x3dbl_1")(x, train)
        bd = self.cbn(96, 3, 1, 1, name="branch3x3dbl_2")(bd, train)
        bd = self.cbn(96, 3, 2, name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(_V3Block):
    """17x17 module with factorised 7x7 convolutions (1x7 and 7x1)."""
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x, train=False):
        c7 = self.channels_7x7
        b1 = self.cbn(192, 1, name="branch1x1")(x, train)
        b7 = self.cbn(c7, 1, name="branch7x7_1")(x, train)
        b7 = self.cbn(c7, (1, 7), 1, (0, 3), name="branch7x7_2")(b7, train)
        b7 = self.cbn(192, (7, 1), 1, (3, 0), name="branch7x7_3")(b7, train)
        bd = self.cbn(c7, 1, name="branch7x7dbl_1")(x, train)
        bd = self.cbn(c7, (7, 1), 1, (3, 0), name="branch7x7dbl_2")(bd, train)
        bd = self.cbn(c7, (1, 7), 1, (0, 3), name="branch7x7dbl_3")(bd, train)
        bd = self.cbn(c7, (7, 1), 1, (3, 0), name="branch7x7dbl_4")(bd, train)
        bd = self.cbn(192, (1, 7), 1, (0, 3), name="branch7x7dbl_5")(bd, train)
        bp = self.cbn(192, 1, name="branch_pool")(_avg(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_V3Block):
    """Grid reduction 17 -> 8."""

    @nn.compact
    def __call__(self, x, train=False):
        b3 = self.cbn(192, 1, name="branch3x3_1")(x, train)
        b3 = self.cbn(320, 3, 2, name="branch3x3_2")(b3, train)
        b7 = self.cbn(192, 1, name="branch7x7x3_1")(x, train)
        b7 = self.cbn(192, (1, 7), 1, (0, 3), name="branch7x7x3_2")(b7, train)
        b7 = self.cbn(192, (7, 1), 1, (3, 0), name="branch7x7x3_3")(b7, train)
        b7 = self.cbn(192, 3, 2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(_V3Block):
    """8x8 module with expanded filter banks (1x3 and 3x1 in parallel)."""

    @nn.compact
    def __call__(self, x, train=False):
        b1 = self.cbn(320, 1, name="branch1x1")(x, train)
        b3 = self.cbn(384, 1, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate([self.cbn(384, (1, 3), 1, (0, 1), name="branch3x3_2a")(b3, train),
                              self.cbn(384, (3, 1), 1, (1, 0), name="branch3x3_2b")(b3, train)],
                             axis=-1)
        bd = self.cbn(448, 1, name="branch3x3dbl_1")(x, train)
        bd = self.cbn(384, 3, 1, 1, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [self.cbn(384, (1, 3), 1, (0, 1), name="branch3x3dbl_3a")(bd, train),
             self.cbn(384, (3, 1), 1, (1, 0), name="branch3x3dbl_3b")(bd, train)], axis=-1)
        bp = self.cbn(192, 1, name="branch_pool")(_avg(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Aux(_V3Block):
    """Auxiliary head on the 17x17 grid: 5x5/3 avg-pool, 1x1 (128), 5x5 (768), FC."""
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x, train=False):
        if min(x.shape[1:3]) >= 5:
            x = avg_pool(x, 5, 3)
        if min(x.shape[1:3]) < 5:  # small inputs: stretch to the 5x5 the head expects
            x = adaptive_avg_pool(x, (max(5, x.shape[1]), max(5, x.shape[2])))
        x = self.cbn(128, 1, name="conv0")(x, train)
        x = self.cbn(768, 5, name="conv1")(x, train)
        x = global_avg_pool(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


# --------------------------------------------------------------------------------------
# BN-Inception
# --------------------------------------------------------------------------------------

# (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj); #1x1 == 0
# marks the stride-2 modules (3c, 4e): no 1x1 branch, max-pool pass-through.
BN_INCEPTION_TABLE = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 0, 128, 160, 64, 96, "max", 0),
    ("4a", 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 0, 128, 192, 192, 256, "max", 0),
    ("5a", 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 352, 192, 320, 192, 224, "max", 128),
)


class BNInception(nn.Module):
    """BN-Inception (Ioffe & Szegedy, 2015, the Inception variant of the BN paper's
    appendix): GoogLeNet with BatchNorm after every convolution, each 5x5 convolution
    replaced by two 3x3 ("double 3x3"), average or max pooling in the pool branch, stride-2
    modules (3c, 4e) instead of separate max-pool layers between stages, no LRN and no
    dropout.  The first layer is a plain 7x7/2 convolution (the paper's depthwise-separable
    variant is not used).  Channel counts follow the table's branch widths; its
    "output size" column for 4c-4e disagrees with them (576 vs 608 / 1056), and the widths
    are what define the network.
    """

    num_classes: int = 1000
    table: Sequence[tuple] = BN_INCEPTION_TABLE
    stem: Sequence[int] = (64, 64, 192)
    dropout_rate: float = 0.0
    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        kw = dict(eps=self.eps, dtype=self.dtype)
        x = ConvBN(self.stem[0], 7, 2, 3, name="conv1", **kw)(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = ConvBN(self.stem[1], 1, name="conv2_reduce", **kw)(x, train)
        x = ConvBN(self.stem[2], 3, 1, 1, name="conv2", **kw)(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        for name, c1, c3r, c3, d3r, d3, pool, pp in self.table:
            if c1 == 0:  # grid reduction: both 3x3 paths end with stride 2
                branches = ([(c3r, 1, 1, 0), (c3, 3, 2, 1)],
                            [(d3r, 1, 1, 0), (d3, 3, 1, 1), (d3, 3, 2, 1)],
                            ["max"])
                # Max-pool padding 1 keeps the three paths the same size for any input.
                x = Mixed(branches, max_padding=1, name=f"inception{name}", **kw)(x, train)
            else:
                branches = ([(c1, 1, 1, 0)],
                            [(c3r, 1, 1, 0), (c3, 3, 1, 1)],
                            [(d3r, 1, 1, 0), (d3, 3, 1, 1), (d3, 3, 1, 1)],
                            ["avg" if pool == "avg" else "maxs1", (pp, 1, 1, 0)])
                x = Mixed(branches, avg_include_pad=True, name=f"inception{name}",
                          **kw)(x, train)
        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.dropout_rate, pool=True, dtype=self.dtype)


@register_model(input_size=(299, 299, 3), num_classes=1000, mean=INCEPTION_MEAN,
                std=INCEPTION_STD, crop_pct=0.875)
def inception_v3(**kwargs):
    """timm ``inception_v3`` (no auxiliary head by default, as timm)."""
    return InceptionV3(**kwargs)


@register_model(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN,
                std=IMAGENET_STD, crop_pct=0.875)
def bn_inception(**kwargs):
    return BNInception(**kwargs)


@register_model(input_size=(75, 75, 3), num_classes=10, mean=INCEPTION_MEAN,
                std=INCEPTION_STD, crop_pct=1.0)
def test_inception_v3(**kwargs):
    return InceptionV3(**dict(dict(num_classes=10, width_mult=1 / 32), **kwargs))


__all__ = ["BNInception", "InceptionClassifier", "InceptionV3", "Mixed", "scaled", "soft_ce"]
