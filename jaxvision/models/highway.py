"""Highway networks (Srivastava, Greff & Schmidhuber, 2015, "Highway Networks" and
"Training Very Deep Networks").

A highway layer mixes a transformation of its input with the input itself:

    y = H(x) * T(x) + x * (1 - T(x)),      T(x) = sigmoid(W_T x + b_T)

``T`` is the transform gate and ``C = 1 - T`` the carry gate.  Initialising ``b_T``
negative (the paper uses -1 to -3, deeper networks more negative) biases every layer
towards carrying its input, so that very deep stacks train from the start.

Two families:

* :class:`HighwayMLP` (``highway_mlp_mnist``): the paper's MNIST networks.  A plain fully
  connected layer projects the 784 pixels to ``width`` units, then ``num_layers`` fully
  connected highway layers (``H = ReLU(W_H x + b_H)``) and a softmax classifier.  With
  width 50 each highway layer holds 5,100 parameters, the paper's "about 5000 per layer"
  (50 blocks per highway layer vs 71 units per plain layer).  ``highway_mlp_mnist`` has 10
  highway layers; the paper's deeper networks (20, 50, 100 layers) are
  ``create_model('highway_mlp_mnist', num_layers=...)``, with ``gate_bias`` -1 to -3.
* :class:`HighwayCNN` (``highway_cnn_cifar``): convolutional highway layers (``H`` and
  ``T`` are 3x3 convolutions, ``H`` with ReLU) in the spirit of the paper's CIFAR-10
  networks (19 and 32 layers, FitNet-like, 7.72% error for the 19-layer one): a plain 3x3
  stem convolution, three groups of highway layers separated by 2x2 max pooling
  (widths 32, 80, 128 here; the paper's exact per-layer widths follow FitNets), global
  average pooling and a linear classifier.  A highway layer keeps its width, so width
  changes happen in plain 1x1 convolutions at the start of each group.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import max_pool
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, register_model


class HighwayDense(nn.Module):
    """Fully connected highway layer: ``y = ReLU(W_H x + b_H) * T + x * (1 - T)``.

    ``gate`` is the affine part of ``T`` (``T = sigmoid(gate(x))``), ``transform`` that of H.
    """

    gate_bias: float = -2.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        h = nn.relu(nn.Dense(d, dtype=self.dtype, name="transform")(x))
        t = jax.nn.sigmoid(nn.Dense(d, dtype=self.dtype,
                                    bias_init=nn.initializers.constant(self.gate_bias),
                                    name="gate")(x))
        return h * t + x * (1.0 - t)


class HighwayConv(nn.Module):
    """Convolutional highway layer: ``H`` and ``T`` are ``k x k`` convolutions ('same'
    padding, stride 1) so the carried input and the transform have the same shape."""

    kernel_size: int = 3
    gate_bias: float = -2.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c, p = x.shape[-1], self.kernel_size // 2
        k = (self.kernel_size, self.kernel_size)
        h = nn.relu(Conv(c, k, padding=pad(p), dtype=self.dtype, name="transform")(x))
        t = jax.nn.sigmoid(Conv(c, k, padding=pad(p), dtype=self.dtype,
                                bias_init=nn.initializers.constant(self.gate_bias),
                                name="gate")(x))
        return h * t + x * (1.0 - t)


class HighwayMLP(nn.Module):
    """Plain projection to ``width`` (ReLU), ``num_layers`` highway layers, linear classifier
    (Srivastava et al., 2015)."""

    num_layers: int = 10
    width: int = 50
    gate_bias: float = -2.0
    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.num_layers < 0 or self.width < 1:
            raise ValueError(f"HighwayMLP needs num_layers >= 0 and width >= 1, got "
                             f"{self.num_layers}, {self.width}")
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.width, dtype=self.dtype, name="proj")(x))
        for i in range(self.num_layers):
            x = HighwayDense(self.gate_bias, dtype=self.dtype, name=f"highway{i}")(x)
        return classifier_head(x, self.num_classes, name="head", dtype=self.dtype)


class HighwayCNN(nn.Module):
    """Convolutional highway network (Srivastava et al., 2015): 3x3 stem conv, groups of
    3x3 highway conv layers separated by 2x2 max pooling, global average pool, classifier.

    ``widths[g]`` and ``depths[g]``: channels and number of highway layers of group g; a
    plain 1x1 conv (ReLU) changes the width where it differs from the previous group's.
    """

    widths: Sequence[int] = (32, 80, 128)
    depths: Sequence[int] = (5, 5, 5)
    gate_bias: float = -2.0
    num_classes: int = 10
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError(f"HighwayCNN widths {tuple(self.widths)} and depths "
                             f"{tuple(self.depths)} must be non-empty and of equal length")
        x = nn.relu(Conv(self.widths[0], (3, 3), padding=pad(1), dtype=self.dtype,
                         name="stem")(x))
        for g, (w, d) in enumerate(zip(self.widths, self.depths)):
            if g > 0:
                x = max_pool(x, 2, 2)
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            if x.shape[-1] != w:
                x = nn.relu(Conv(w, (1, 1), dtype=self.dtype, name=f"proj{g}")(x))
            for i in range(d):
                x = HighwayConv(3, self.gate_bias, dtype=self.dtype,
                                name=f"group{g}_highway{i}")(x)
        return classifier_head(x, self.num_classes, name="head", pool=True, dtype=self.dtype)


_MNIST = dict(input_size=(28, 28, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
              crop_pct=1.0)
_CIFAR = dict(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              crop_pct=1.0)


@register_model(**_MNIST)
def highway_mlp_mnist(**kwargs):
    """10 highway layers of width 50 (5,100 parameters each) after a 784->50 projection."""
    return HighwayMLP(**kwargs)


@register_model(**_CIFAR)
def highway_cnn_cifar(**kwargs):
    """Convolutional highway network for CIFAR-10: 15 highway layers + stem, projections
    and classifier (19 weight layers, like the paper's 19-layer network)."""
    return HighwayCNN(**kwargs)


@register_model(**_MNIST)
def test_highway_mlp(**kwargs):
    return HighwayMLP(**dict(dict(num_layers=3, width=8), **kwargs))


@register_model(**_CIFAR)
def test_highway_cnn(**kwargs):
    return HighwayCNN(**dict(dict(widths=(4, 8), depths=(2, 1)), **kwargs))


__all__ = ["HighwayCNN", "HighwayConv", "HighwayDense", "HighwayMLP"]
