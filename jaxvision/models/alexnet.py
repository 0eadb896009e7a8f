"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) and torchvision's variant of it.

``alexnet_paper``: the paper's network on one device ("single tower"): five convolutions
96-256-384-384-256 (11x11/4, 5x5, 3x3, 3x3, 3x3), ReLU, local response normalisation
(k=2, n=5, alpha=1e-4, beta=0.75, alpha on the sum as in the paper) after the ReLU of conv1
and conv2, overlapping 3x3/2 max-pooling after both LRNs and after conv5, and a classifier
4096-4096-1000 with dropout 0.5 before the first two fully connected layers.  Without the
two-GPU split it has 62,378,344 parameters; ``groups=(1, 2, 1, 2, 2)`` restores the paper's
connectivity (conv2, conv4 and conv5 see only their own GPU's half) and its ~61M parameters.

``alexnet``: torchvision's one-tower model (64-192-384-256-256, no LRN), 61,100,840
parameters; its converted weights give torchvision's logits.

Both use adaptive average pooling to 6x6 before the classifier, so smaller inputs work.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv, pad
from jaxvision.layers.activations import create_act
from jaxvision.layers.head import classifier_head
from jaxvision.layers.lrn import LocalResponseNorm
from jaxvision.layers.pooling import adaptive_avg_pool, max_pool
from jaxvision.registry import IMAGENET_MEAN, IMAGENET_STD, register_model


class AlexNet(nn.Module):
    """AlexNet: conv stack (``widths``/``kernels``/``strides``), max-pool 3x3/2 after the
    convs in ``pool_after``, optional LRN after conv1/conv2, adaptive average pool to
    ``pool_size``, then ``hidden`` FC layers with dropout and the classifier."""

    num_classes: int = 1000
    widths: Sequence[int] = (96, 256, 384, 384, 256)
    kernels: Sequence[int] = (11, 5, 3, 3, 3)
    strides: Sequence[int] = (4, 1, 1, 1, 1)
    paddings: Sequence[int] = (2, 2, 1, 1, 1)  # 224 -> 55 -> 27 -> 13 -> 6
    groups: Sequence[int] = (1, 1, 1, 1, 1)
    pool_after: Sequence[int] = (0, 1, 4)
    lrn: bool = True
    lrn_after: Sequence[int] = (0, 1)
    hidden: Sequence[int] = (4096, 4096)
    pool_size: int = 6
    dropout_rate: float = 0.5
    act_layer: Any = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        for i, (w, k, s, p, g) in enumerate(zip(self.widths, self.kernels, self.strides,
                                                self.paddings, self.groups)):
            x = Conv(w, (k, k), strides=(s, s), padding=pad(p),
                     feature_group_count=g, dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = create_act(self.act_layer, f"act{i + 1}", self.dtype)(x)
            if self.lrn and i in self.lrn_after:
                x = LocalResponseNorm(5, 1e-4, 0.75, 2.0, dtype=self.dtype)(x)
            if i in self.pool_after:
                x = max_pool(x, 3, 2)
        x = adaptive_avg_pool(x, self.pool_size)
        x = x.reshape(x.shape[0], -1)  # (B, 6*6*C) in (H, W, C) order
        for j, h in enumerate(self.hidden):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.Dense(h, dtype=self.dtype, name=f"fc{j + 1}")(x)
            x = create_act(self.act_layer, f"act_fc{j + 1}", self.dtype)(x)
        return classifier_head(x, self.num_classes, name="head", dtype=self.dtype)


@register_model(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN,
                std=IMAGENET_STD, crop_pct=0.875)
def alexnet_paper(**kwargs):
    return AlexNet(**kwargs)


@register_model(input_size=(224, 224, 3), num_classes=1000, mean=IMAGENET_MEAN,
                std=IMAGENET_STD, crop_pct=0.875)
def alexnet(**kwargs):
    """torchvision ``alexnet``."""
    return AlexNet(**dict(dict(widths=(64, 192, 384, 256, 256), lrn=False), **kwargs))


@register_model(input_size=(32, 32, 3), num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                crop_pct=1.0)
def test_alexnet(**kwargs):
    return AlexNet(**dict(dict(num_classes=10, widths=(8, 8, 8, 8, 8), kernels=(5, 3, 3, 3, 3),
                               strides=(2, 1, 1, 1, 1), paddings=(2, 1, 1, 1, 1),
                               pool_after=(0, 4), hidden=(16,),
                               pool_size=2), **kwargs))


__all__ = ["AlexNet"]
