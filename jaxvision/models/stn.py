"""ST-CNN for distorted MNIST (Jaderberg et al., 2015, section 4.1).

A spatial transformer at the input feeds a small CNN classifier.  Sizes (defaults, for
the 42x42 RTS canvas of :mod:`jaxvision.data.distort`):

* localisation net: 2x2 max-pool, conv 5x5x20, ReLU, 2x2 max-pool, conv 5x5x20, ReLU,
  FC 50, ReLU, then the 6-unit ``theta`` layer (zero weights, identity bias);
  42x42 -> 21 -> 17 -> 8 -> 4, so FC 50 sees 4*4*20 = 320 features.
* classifier: conv 9x9x32 (pad 4), ReLU, 2x2 max-pool, conv 7x7x32 (pad 3), ReLU,
  2x2 max-pool, FC to the classes; 42 -> 21 -> 10, so the head sees 10*10*32 = 3200.

The model expects raw intensities in [0, 1] (mean 0, std 1 in its data contract) so that
the zeros the sampler reads outside the image equal the black background.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers import Conv, pad
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import max_pool
from jaxvision.layers.spatial_transformer import SpatialTransformer
from jaxvision.registry import register_model


class LocalisationNet(nn.Module):
    """Small CNN regressing the features from which the transformer predicts ``theta``."""

    features: Sequence[int] = (20, 20)
    kernel_size: int = 5
    hidden: int = 50
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        # Looking at a half-resolution copy is enough to locate a digit and halves the cost.
        x = max_pool(x, 2, 2)
        for i, f in enumerate(self.features):
            if i > 0:
                x = max_pool(x, 2, 2)
            k = self.kernel_size
            x = nn.relu(Conv(f, (k, k), padding=pad(0), dtype=self.dtype, name=f"conv{i + 1}")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc")(x))


class STCNN(nn.Module):
    """Spatial transformer at the input, then a two-layer CNN classifier.

    ``theta_init_scale`` > 0 draws the theta layer's weights from N(0, scale^2) instead of
    zeros (the bias stays the identity).  The paper's zero init means the localisation
    net receives no gradient on the very first step; a tiny scale avoids that where one
    step must reach every parameter.
    """

    num_classes: int = 10
    loc_features: Sequence[int] = (20, 20)
    loc_hidden: int = 50
    features: Sequence[int] = (32, 32)
    kernel_sizes: Sequence[int] = (9, 7)
    out_size: Any = None
    theta_init_scale: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"STCNN expects NHWC images, got shape {x.shape}")
        loc = LocalisationNet(self.loc_features, hidden=self.loc_hidden, dtype=self.dtype,
                              name="localization")
        kernel_init = (nn.initializers.normal(self.theta_init_scale) if self.theta_init_scale > 0
                       else nn.initializers.zeros)
        x = SpatialTransformer(loc, out_size=self.out_size, theta_kernel_init=kernel_init,
                               dtype=self.dtype, name="st")(x, train=train)
        for i, (f, k) in enumerate(zip(self.features, self.kernel_sizes)):
            x = Conv(f, (k, k), padding=pad(k // 2), dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = max_pool(nn.relu(x), 2, 2)
        x = x.reshape(x.shape[0], -1)
        return classifier_head(x, self.num_classes, name="fc", dtype=self.dtype)


@register_model(input_size=(42, 42, 1), num_classes=10, mean=(0.0,), std=(1.0,), crop_pct=1.0)
def stn_cnn_mnist(**kwargs):
    return STCNN(**kwargs)


@register_model(input_size=(28, 28, 1), num_classes=10, mean=(0.0,), std=(1.0,), crop_pct=1.0)
def test_stn(**kwargs):
    return STCNN(**dict(dict(loc_features=(4, 4), loc_hidden=8, features=(4, 8),
                             kernel_sizes=(5, 3), theta_init_scale=1e-2), **kwargs))
