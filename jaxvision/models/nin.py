"""Network in Network (Lin, Chen & Yan, 2014).

Each *mlpconv* layer is a spatial convolution followed by two 1x1 convolutions (a small MLP
shared over positions), all with ReLU.  Dropout (0.5) sits between mlpconv layers, after
the pooling, and the classifier is global average pooling of the last mlpconv, whose final
1x1 convolution has one channel per class (no fully connected layer).

Column sizes (output channels of conv / cccp / cccp per mlpconv):

* ``nin_cifar``: the reference Caffe model for CIFAR-10: 192-160-96 (5x5) / 192-192-192 (5x5)
  / 192-192-10 (3x3), 3x3/2 max then 3x3/2 average pooling (Caffe rounds up: 32 -> 16 -> 8),
  966,986 parameters.  Its last 1x1 convolution is followed by a ReLU before the global
  average, as in the reference model (``final_relu``).
* ``nin_mnist``: the paper uses "the same structure as CIFAR-10 with fewer feature maps"
  without giving the widths; we use 96-64-48 (5x5) / 128-96-48 (5x5) / 128-96-10 (3x3) on
  28x28 inputs (28 -> 14 -> 7).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv
from jaxvision.layers.activations import create_act
from jaxvision.layers.pooling import avg_pool, global_avg_pool, max_pool
from jaxvision.registry import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, register_model


class NiN(nn.Module):
    """NIN: ``len(widths)`` mlpconv layers; ``widths[i]`` lists the spatial conv's and the
    1x1 convs' channels (the last mlpconv's final 1x1 conv, with ``num_classes`` channels, is
    added automatically); ``kernels[i]`` is the spatial kernel; ``pools`` the pooling after
    every mlpconv but the last ('max' or 'avg', 3x3/2, ceil mode)."""

    num_classes: int = 10
    widths: Sequence[Sequence[int]] = ((192, 160, 96), (192, 192, 192), (192, 192))
    kernels: Sequence[int] = (5, 5, 3)
    pools: Sequence[str] = ("max", "avg")
    dropout_rate: float = 0.5
    act_layer: Any = "relu"
    final_relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        n = len(self.widths)
        if not (len(self.kernels) == n and len(self.pools) == n - 1):
            raise ValueError("NiN needs len(kernels) == len(widths) == len(pools) + 1")
        idx = 0
        for s, (widths, k) in enumerate(zip(self.widths, self.kernels)):
            last = s == n - 1
            chans = list(widths) + ([self.num_classes] if last and self.num_classes else [])
            for j, c in enumerate(chans):
                if j == 0:
                    x = Conv(c, (k, k), padding=((k // 2,) * 2,) * 2, dtype=self.dtype,
                             name=f"conv{s + 1}")(x)
                else:
                    idx += 1
                    x = Conv(c, (1, 1), dtype=self.dtype, name=f"cccp{idx}")(x)
                is_logits = last and self.num_classes and j == len(chans) - 1
                if not is_logits:
                    x = create_act(self.act_layer, f"act{s + 1}_{j}", self.dtype)(x)
                elif self.final_relu:
                    x = nn.relu(x)
            if not last:
                pool = {"max": max_pool, "avg": avg_pool}.get(self.pools[s])
                if pool is None:
                    raise ValueError(f"unknown pooling {self.pools[s]!r}: use 'max' or 'avg'")
                x = pool(x, 3, 2, ceil_mode=True)
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return global_avg_pool(x)


@register_model(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                crop_pct=1.0)
def nin_cifar(**kwargs):
    return NiN(**kwargs)


@register_model(input_size=(28, 28, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
                crop_pct=1.0)
def nin_mnist(**kwargs):
    return NiN(**dict(dict(widths=((96, 64, 48), (128, 96, 48), (128, 96))), **kwargs))


@register_model(input_size=(32, 32, 3), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                crop_pct=1.0)
def test_nin(**kwargs):
    return NiN(**dict(dict(widths=((8, 8, 8), (8, 8, 8), (8, 8)), final_relu=False), **kwargs))


__all__ = ["NiN"]
