"""GoogLeNet (Szegedy et al., 2014): the paper's network and torchvision's BN variant.

``googlenet_paper`` follows Table 1 of the paper.  Each Inception module has four branches
concatenated along channels: ``#1x1``; ``#3x3 reduce`` (1x1) -> ``#3x3``; ``#5x5 reduce``
(1x1) -> ``#5x5``; 3x3/1 max-pool -> ``pool proj`` (1x1); every convolution is followed by a
ReLU.  The stem is 7x7/2 conv (64), 3x3/2 max-pool, LRN, 1x1 conv (64), 3x3 conv (192), LRN,
3x3/2 max-pool; 3x3/2 max-pools also follow (3b) and (4e); a global 7x7 average pool,
dropout 40% and a linear layer make the classifier.  Pooling rounds up, as in the original
Caffe model (224 -> 112 -> 56 -> 28 -> 14 -> 7).  The paper gives no LRN constants; AlexNet's
(k=2, n=5, alpha=1e-4, beta=0.75) are used.

Two auxiliary classifiers sit on (4a) and (4d): 5x5/3 average pooling (14x14 -> 4x4), a 1x1
convolution with 128 filters and ReLU, a 1024-unit FC layer with ReLU, 70% dropout and a
linear classifier.  They run only in training (and at init, so their parameters exist);
when the trainer passes ``targets`` their cross-entropy losses, weighted by 0.3, are emitted
with ``self.sow('losses', 'aux1_loss' / 'aux2_loss', ...)``.  The returned value is always the main
logits.  ``googlenet_paper``'s parameter count includes the auxiliary heads.

``googlenet`` is torchvision's model: BN (eps 1e-3) after every convolution (no conv bias),
no LRN, 3x3 convolutions in the "5x5" branch (torchvision's known deviation, kept for weight
compatibility), a final 2x2/2 max-pool, dropout 0.2 and adaptive 4x4 pooling in the auxiliary
heads, ``transform_input=False``.  By default it has no auxiliary heads (``aux_logits=False``:
6,624,904 parameters, the reference count); ``aux_logits=True`` adds them as torchvision
does, with the same loss weighting.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import optax

from jaxvision.layers.conv_bn import ConvBN
from jaxvision.layers.head import classifier_head
from jaxvision.layers.lrn import LocalResponseNorm
from jaxvision.layers.pooling import adaptive_avg_pool, avg_pool, max_pool
from jaxvision.registry import IMAGENET_MEAN, IMAGENET_STD, register_model

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) for 3a, 3b, 4a-4e, 5a, 5b.
INCEPTION_TABLE = (
    (64, 96, 128, 16, 32, 32),      # 3a  28x28x256
    (128, 128, 192, 32, 96, 64),    # 3b  28x28x480
    (192, 96, 208, 16, 48, 64),     # 4a  14x14x512
    (160, 112, 224, 24, 64, 64),    # 4b  14x14x512
    (128, 128, 256, 24, 64, 64),    # 4c  14x14x512
    (112, 144, 288, 32, 64, 64),    # 4d  14x14x528
    (256, 160, 320, 32, 128, 128),  # 4e  14x14x832
    (256, 160, 320, 32, 128, 128),  # 5a  7x7x832
    (384, 192, 384, 48, 128, 128),  # 5b  7x7x1024
)
MODULE_NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


class Inception(nn.Module):
    """Inception module with dimension reductions (Figure 2b)."""

    widths: Sequence[int]
    kernel5: int = 5
    bn: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c1, c3r, c3, c5r, c5, pp = self.widths
        conv = lambda f, k, name: ConvBN(f, k, padding=k // 2, norm=self.bn,  # noqa: E731
                                            dtype=self.dtype, name=name)
        b1 = conv(c1, 1, "branch1")(x, train)
        b2 = conv(c3, 3, "branch2_1")(conv(c3r, 1, "branch2_0")(x, train), train)
        b3 = conv(c5, self.kernel5, "branch3_1")(conv(c5r, 1, "branch3_0")(x, train), train)
        b4 = conv(pp, 1, "branch4_1")(max_pool(x, 3, 1, 1, ceil_mode=True), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4x4, 1x1 conv (128), FC 1024, dropout, FC."""

    num_classes: int
    widths: Sequence[int] = (128, 1024)
    paper_pool: bool = True
    bn: bool = False
    dropout_rate: float = 0.7
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.paper_pool and min(x.shape[1:3]) >= 5:
            x = avg_pool(x, 5, 3)  # 14x14 -> 4x4
        x = adaptive_avg_pool(x, 4)
        x = ConvBN(self.widths[0], 1, norm=self.bn, dtype=self.dtype, name="conv")(x, train)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.widths[1], dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


def _soft_ce(logits, targets):
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                                targets.astype(jnp.float32)))


class GoogLeNet(nn.Module):
    """GoogLeNet; ``paper=True`` gives the paper's network, ``False`` torchvision's."""

    num_classes: int = 1000
    table: Sequence[Sequence[int]] = INCEPTION_TABLE
    stem: Sequence[int] = (64, 64, 192)
    paper: bool = True
    aux_logits: bool = True
    aux_weight: float = 0.3
    aux_widths: Sequence[int] = (128, 1024)
    aux_dropout: float = 0.7
    dropout_rate: float = 0.4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False, targets: Optional[jnp.ndarray] = None):
        if len(self.table) != 9:
            raise ValueError(f"GoogLeNet needs 9 Inception modules, got {len(self.table)}")
        bn = not self.paper
        lrn = lambda y: LocalResponseNorm(5, 1e-4, 0.75, 2.0, dtype=self.dtype)(y)  # noqa: E731
        x = ConvBN(self.stem[0], 7, 2, 3, norm=bn, dtype=self.dtype, name="conv1")(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        if self.paper:
            x = lrn(x)
        x = ConvBN(self.stem[1], 1, norm=bn, dtype=self.dtype, name="conv2")(x, train)
        x = ConvBN(self.stem[2], 3, 1, 1, norm=bn, dtype=self.dtype, name="conv3")(x, train)
        if self.paper:
            x = lrn(x)
        x = max_pool(x, 3, 2, ceil_mode=True)

        run_aux = self.aux_logits and self.num_classes > 0 and (train or self.is_initializing())
        for i, (name, widths) in enumerate(zip(MODULE_NAMES, self.table)):
            if name == "4a":
                x = max_pool(x, 3, 2, ceil_mode=True)
            if name == "5a":
                x = max_pool(x, 3 if self.paper else 2, 2, ceil_mode=True)
            x = Inception(widths, 5 if self.paper else 3, bn=bn, dtype=self.dtype,
                          name=f"inception{name}")(x, train)
            if run_aux and name in ("4a", "4d"):
                aux_name = "aux1" if name == "4a" else "aux2"
                aux = InceptionAux(self.num_classes, self.aux_widths, paper_pool=self.paper, bn=bn,
                                   dropout_rate=self.aux_dropout, dtype=self.dtype,
                                   name=aux_name)(x, train)
                if train and targets is not None:
                    self.sow("losses", f"{aux_name}_loss",
                             self.aux_weight * _soft_ce(aux, targets))

        return classifier_head(x, self.num_classes, name="fc", train=train,
                               drop_rate=self.dropout_rate, pool=True, dtype=self.dtype)


_IMAGENET = dict(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, crop_pct=0.875)


@register_model(**_IMAGENET)
def googlenet_paper(**kwargs):
    return GoogLeNet(**kwargs)


@register_model(**_IMAGENET)
def googlenet(**kwargs):
    """torchvision ``googlenet`` (BN variant), without auxiliary heads by default."""
    return GoogLeNet(**dict(dict(paper=False, aux_logits=False, dropout_rate=0.2), **kwargs))


@register_model(input_size=(32, 32, 3), num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                crop_pct=1.0)
def test_googlenet(**kwargs):
    """Tiny paper-style GoogLeNet with both auxiliary heads active."""
    tiny = tuple(tuple(max(4, c // 16) for c in row) for row in INCEPTION_TABLE)
    return GoogLeNet(**dict(dict(num_classes=10, table=tiny, stem=(8, 8, 16), aux_widths=(4, 16)),
                            **kwargs))


__all__ = ["GoogLeNet", "INCEPTION_TABLE", "Inception", "InceptionAux", "MODULE_NAMES"]
