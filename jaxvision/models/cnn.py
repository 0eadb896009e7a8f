"""Small convolutional networks: the lecture's opening CNN and an MNIST CNN."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv, pad
from jaxvision.layers.pooling import max_pool
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, register_model


class SimpleCNN(nn.Module):
    """The lecture's opening network: (3x3 conv, ReLU, 3x3/2 max-pool) stages, global
    average pooling to a vector ``x``, then ``softmax(W ReLU(V x + a) + b)``."""

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 128)
    hidden: int = 128
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        for i, w in enumerate(self.widths):
            x = Conv(w, (3, 3), padding=pad(1), dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = nn.relu(x)
            x = max_pool(x, 3, 2, 1)
        x = jnp.mean(x, axis=(1, 2))  # global average pooling -> (B, C)
        if self.num_classes == 0:
            return x
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


class MnistCNN(nn.Module):
    """A small, fast MNIST CNN: two conv-BN-ReLU pairs per stage at 28x28 and 14x14,
    2x2 max-pooling, a 256-unit hidden layer with dropout.  Reaches ~99.5% on MNIST
    in a few epochs (see ``experiments/configs/mnist_cnn.py``)."""

    num_classes: int = 10
    widths: Sequence[int] = (32, 64)
    hidden: int = 256
    dropout_rate: float = 0.3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-5, dtype=self.dtype, name=name)
        for s, w in enumerate(self.widths):
            for j in range(2):
                x = Conv(w, (3, 3), padding=pad(1), use_bias=False, dtype=self.dtype,
                         name=f"conv{s + 1}_{j + 1}")(x)
                x = nn.relu(norm(f"bn{s + 1}_{j + 1}")(x))
            x = max_pool(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        if self.num_classes == 0:
            return x
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


@register_model(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                crop_pct=1.0)
def simple_cnn(**kwargs):
    return SimpleCNN(**kwargs)


@register_model(input_size=(28, 28, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
                crop_pct=1.0)
def mnist_cnn(**kwargs):
    return MnistCNN(**kwargs)


@register_model(input_size=(28, 28, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
                crop_pct=1.0)
def test_cnn(**kwargs):
    return MnistCNN(**dict(dict(widths=(4, 8), hidden=16), **kwargs))
