"""Fully connected MNIST networks: dropout MLPs (Srivastava et al., 2014) and maxout MLPs
(Goodfellow et al., 2013).

Both drop input pixels with probability 0.2 and hidden units with probability 0.5, as in the
papers, and are meant to be trained with the max-norm constraint ``||w||_2 <= c`` on each
unit's incoming weights (:func:`jaxvision.layers.maxnorm.max_norm`, e.g. ``c = 3`` or 4).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.activations import create_act
from jaxvision.layers.head import classifier_head
from jaxvision.registry import MNIST_MEAN, MNIST_STD, register_model


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al., 2013): the max over ``pieces`` affine pieces,
    ``h_i(x) = max_j (x W_{.ij} + b_ij)``.  The kernel is (in, features * pieces) with the
    pieces of one unit adjacent, so max-norm applies to each piece's weight vector."""

    features: int
    pieces: int = 5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.features * self.pieces, dtype=self.dtype, name="dense")(x)
        y = y.reshape(*y.shape[:-1], self.features, self.pieces)
        return jnp.max(y, axis=-1)


class MLP(nn.Module):
    """Flatten -> input dropout -> (Dense or Maxout -> act -> dropout) x L -> Dense.

    ``hidden``: widths of the hidden layers; ``pieces > 0`` makes them maxout layers (no
    further activation); otherwise ``act_layer`` (ReLU as in the dropout paper) is applied.
    """

    num_classes: int = 10
    hidden: Sequence[int] = (1024, 1024, 2048)
    pieces: int = 0
    act_layer: Any = "relu"
    input_dropout: float = 0.2
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
        for i, width in enumerate(self.hidden):
            if self.pieces > 0:
                x = Maxout(width, self.pieces, dtype=self.dtype, name=f"fc{i + 1}")(x)
            else:
                x = nn.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x)
                x = create_act(self.act_layer, f"act{i + 1}", self.dtype)(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return classifier_head(x, self.num_classes, name="head", dtype=self.dtype)


_MNIST = dict(input_size=(28, 28, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
              crop_pct=1.0)


@register_model(**_MNIST)
def dropout_mlp_mnist(**kwargs):
    """784-1024-1024-2048-10 ReLU, dropout 0.2 (input) / 0.5 (hidden) (Srivastava et al.)."""
    return MLP(**dict(dict(hidden=(1024, 1024, 2048)), **kwargs))


@register_model(**_MNIST)
def maxout_mlp_mnist(**kwargs):
    """784-240x5-240x5-10: two maxout layers of 240 units with 5 pieces (Goodfellow et al.)."""
    return MLP(**dict(dict(hidden=(240, 240), pieces=5), **kwargs))


@register_model(**_MNIST)
def test_mlp(**kwargs):
    return MLP(**dict(dict(hidden=(16, 16), pieces=2, input_dropout=0.0, dropout_rate=0.1),
                      **kwargs))


__all__ = ["MLP", "Maxout"]
