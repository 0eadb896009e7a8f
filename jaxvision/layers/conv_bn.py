"""Convolution -> BatchNorm -> ReLU, the unit the Inception families are built of."""
from __future__ import annotations

from typing import Any, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, tuple2

IntOr2 = Union[int, tuple]


class ConvBN(nn.Module):
    """Conv -> BatchNorm -> ReLU, submodules ``conv`` and ``bn`` as timm's ``ConvNormAct``
    and torchvision's ``BasicConv2d``.  ``padding``: int or (ph, pw), symmetric, as torch.

    The conv has no bias while a BatchNorm follows it; ``norm=False`` drops the BatchNorm
    and gives the conv a bias (GoogLeNet without BN); ``act=False`` drops the ReLU.
    """

    features: int
    kernel: IntOr2 = 1
    stride: int = 1
    padding: IntOr2 = 0
    eps: float = 1e-3
    act: bool = True
    norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        ph, pw = tuple2(self.padding)
        x = Conv(self.features, tuple2(self.kernel), strides=tuple2(self.stride),
                 padding=((ph, ph), (pw, pw)), use_bias=not self.norm, dtype=self.dtype,
                 name="conv")(x)
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.eps,
                             dtype=self.dtype, name="bn")(x)
        return nn.relu(x) if self.act else x


__all__ = ["ConvBN"]
