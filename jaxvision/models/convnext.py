"""ConvNeXt (Liu et al., 2022), "A ConvNet for the 2020s" (arXiv:2201.03545).

A ResNet modernised step by step towards a vision Transformer: a 4x4/4 patchify stem,
stages of inverted-bottleneck blocks (depthwise 7x7 conv -> LayerNorm -> Linear 4C -> GELU
-> Linear C, scaled by a learnable per-channel layer scale and dropped by stochastic depth),
LayerNorm + 2x2/2 conv between stages, and a pool -> LayerNorm -> Linear head.

Layouts and names follow timm's ``ConvNeXt`` (``conv_mlp=False``, patch stem) so its state
dicts convert one-to-one (``jaxvision/convert/convnext.py``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.conv import Conv, pad
from jaxvision.layers.drop import module_drop_path
from jaxvision.layers.head import classifier_head
from jaxvision.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    register_model,
)

_ACTIVATIONS: dict[str, Callable] = {
    "gelu": partial(jax.nn.gelu, approximate=False),  # torch nn.GELU default: exact erf form
    "gelu_tanh": partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}

# timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. +-100 std: a plain normal.
_init = nn.initializers.normal(0.02)


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv -> LN -> Linear(4C) -> GELU -> Linear(C) -> layer scale, + input."""

    kernel_size: int = 7
    mlp_ratio: float = 4.0
    ls_init_value: float | None = 1e-6
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    act: Callable = jax.nn.gelu
    conv_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        c = x.shape[-1]
        dense = partial(nn.Dense, dtype=self.dtype, kernel_init=_init)
        y = Conv(c, (self.kernel_size, self.kernel_size), padding=pad((self.kernel_size - 1) // 2),
                 feature_group_count=c, use_bias=self.conv_bias, kernel_init=_init,
                 dtype=self.dtype, name="conv_dw")(x)
        y = nn.LayerNorm(epsilon=self.norm_eps, use_fast_variance=False, dtype=self.dtype,
                         name="norm")(y)
        y = dense(int(self.mlp_ratio * c), name="mlp_fc1")(y)  # (B, H, W, 4C)
        y = dense(c, name="mlp_fc2")(self.act(y))
        if self.ls_init_value is not None:
            y = y * self.param("gamma", nn.initializers.constant(self.ls_init_value), (c,))
        return x + module_drop_path(self, y, self.drop_path_rate, deterministic=not train)


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al., 2022) with timm's parameter layout.

    ``ls_init_value=None`` removes layer scale; ``head_init_scale`` multiplies the initial
    classifier weights (the paper fine-tunes with 0.001 at high resolution).
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    kernel_sizes: int | Sequence[int] = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    ls_init_value: float | None = 1e-6
    head_init_scale: float = 1.0
    conv_bias: bool = True
    norm_eps: float = 1e-6
    act: str = "gelu"
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"ConvNeXt expects NHWC images of rank 4, got shape {x.shape}")
        if len(self.depths) != len(self.dims):
            raise ValueError(f"depths {tuple(self.depths)} and dims {tuple(self.dims)} must "
                             "have the same length")
        if self.act not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; one of {sorted(_ACTIVATIONS)}")
        ks = self.kernel_sizes
        ks = (ks,) * len(self.depths) if isinstance(ks, int) else tuple(ks)
        if len(ks) != len(self.depths):
            raise ValueError(f"kernel_sizes {ks} must give one size per stage "
                             f"({len(self.depths)})")
        ln = partial(nn.LayerNorm, epsilon=self.norm_eps, use_fast_variance=False,
                     dtype=self.dtype)
        conv = partial(Conv, use_bias=self.conv_bias, kernel_init=_init, dtype=self.dtype)

        p = self.patch_size
        x = conv(self.dims[0], (p, p), strides=(p, p), padding="VALID", name="stem_0")(x)
        x = ln(name="stem_1")(x)  # (B, H/4, W/4, C0)

        total = sum(self.depths)
        dpr = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        idx = 0
        for si, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if si > 0:
                x = ln(name=f"stages_{si}_downsample_0")(x)
                x = conv(dim, (2, 2), strides=(2, 2), padding="VALID",
                         name=f"stages_{si}_downsample_1")(x)
            for bi in range(depth):
                x = ConvNeXtBlock(
                    kernel_size=ks[si], mlp_ratio=self.mlp_ratio, ls_init_value=self.ls_init_value,
                    drop_path_rate=dpr[idx], norm_eps=self.norm_eps,
                    act=_ACTIVATIONS[self.act], conv_bias=self.conv_bias, dtype=self.dtype,
                    name=f"stages_{si}_blocks_{bi}")(x, train=train)
                idx += 1

        x = jnp.mean(x, axis=(1, 2))
        x = ln(name="head_norm")(x)
        scale = self.head_init_scale
        return classifier_head(x, self.num_classes, name="head_fc", train=train,
                               drop_rate=self.drop_rate, dtype=self.dtype,
                               kernel_init=lambda *a: _init(*a) * scale,
                               bias_init=nn.initializers.zeros)


@register_model(crop_pct=0.95, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def convnext_tiny(**kwargs):
    return ConvNeXt(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), **kwargs)


@register_model(crop_pct=0.95, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def convnext_small(**kwargs):
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), **kwargs)


@register_model(crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def convnext_base(**kwargs):
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), **kwargs)


@register_model(crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def convnext_large(**kwargs):
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), **kwargs)


@register_model(crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def convnext_xlarge(**kwargs):
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048), **kwargs)


# Same architecture as timm's ``test_convnext`` (so its weights convert), at a small input.
@register_model(input_size=(32, 32, 3), crop_pct=0.95, mean=INCEPTION_MEAN, std=INCEPTION_STD)
def test_convnext(**kwargs):
    cfg = {"depths": (1, 2, 4, 2), "dims": (24, 32, 48, 64), "norm_eps": 1e-5, "act": "gelu_tanh"}
    return ConvNeXt(**{**cfg, **kwargs})
