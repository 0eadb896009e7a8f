"""Normalizer-free networks: NF-ResNets (Brock et al., 2021a) and NFNets (Brock et al., 2021b).

"Characterizing signal propagation to close the performance gap in unnormalized ResNets"
(arXiv:2101.08692) and "High-Performance Large-Scale Image Recognition Without
Normalization" (arXiv:2102.06171).

Batch normalisation is replaced by analytic signal-propagation control:

* every convolution is a :class:`~jaxvision.layers.std_conv.ScaledStdConv` (scaled weight
  standardisation with a learnable per-filter gain);
* activations are multiplied by ``gamma``, the constant that restores unit variance for a
  unit-Gaussian input (inside the activation for the DeepMind ``dm_nfnet`` weights, folded
  into the conv scale otherwise);
* a residual block computes ``x + alpha * f(x / beta)`` with ``beta`` the analytically
  expected standard deviation of its input, reset at each stage's transition block;
* the residual branch starts at zero: the last conv's gain is zero-initialised, or, with
  ``skipinit``, a scalar ``skipinit_gain`` is (SkipInit, De & Smith, 2020).

Layouts and parameter names follow timm's ``NormFreeNet`` so its state dicts convert
one-to-one (``jaxvision/convert/nfnet.py``).  Gradient clipping (AGC), the other half of the
NFNet recipe, is ``optax.adaptive_grad_clip`` in the optimizer chain.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.attention import SqueezeExcite
from jaxvision.layers.drop import module_drop_path
from jaxvision.layers.head import classifier_head
from jaxvision.layers.helpers import make_divisible
from jaxvision.layers.pooling import avg_pool, max_pool
from jaxvision.layers.std_conv import ScaledStdConv
from jaxvision.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    register_model,
)

# Variance-preserving gains of each non-linearity for a unit-Gaussian input (the DeepMind
# reference constants, also used by timm).
NONLIN_GAMMA = {
    "identity": 1.0,
    "gelu": 1.7015043497085571,
    "relu": 1.7139588594436646,
    "silu": 1.7881293296813965,
}

_ACTIVATIONS: dict[str, Callable] = {
    "identity": lambda x: x,
    "gelu": partial(jax.nn.gelu, approximate=False),  # torch nn.GELU default: exact erf form
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

_STEM_TYPES = ("", "7x7", "3x3", "7x7_pool", "3x3_pool", "deep", "deep_tiered", "deep_quad",
               "deep_pool")


def torch_padding(kernel_size: int, stride: int = 1, dilation: int = 1):
    """Symmetric padding timm gives a conv with ``padding=None``."""
    p = ((stride - 1) + dilation * (kernel_size - 1)) // 2
    return ((p, p), (p, p))


class NormFreeBlock(nn.Module):
    """Pre-activation normalizer-free bottleneck: ``x + alpha * f(act(x) * beta)``.

    With ``extra_conv`` (NFNet) the bottleneck has two grouped 3x3 convs; the shortcut of a
    transition block is a (ceil-mode) 2x2 average pool and a 1x1 conv of the pre-activated
    input ("D"-style downsampling).
    """

    out_features: int
    mid_features: int
    groups: int = 1
    stride: int = 1
    alpha: float = 0.2
    beta: float = 1.0
    downsample: bool = False
    extra_conv: bool = False
    se_features: int = 0  # SE reduction width; 0 = no SE
    attn_gain: float = 2.0
    skipinit: bool = False
    zero_init_last: bool = True
    drop_path_rate: float = 0.0
    act: Callable = jax.nn.relu
    conv: Callable = ScaledStdConv
    same_padding: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        conv, act = self.conv, self.act

        def pad(k, s=1):
            return "SAME" if self.same_padding else torch_padding(k, s)

        out = act(x) * self.beta
        shortcut = x
        if self.downsample:
            s = (avg_pool(out, 2, self.stride, ceil_mode=True, count_include_pad=False)
                 if self.stride > 1 else out)
            shortcut = conv(self.out_features, 1, padding=pad(1), name="downsample_conv")(s)

        out = conv(self.mid_features, 1, padding=pad(1), name="conv1")(out)
        out = conv(self.mid_features, 3, strides=self.stride, padding=pad(3, self.stride),
                   feature_group_count=self.groups, name="conv2")(act(out))
        if self.extra_conv:
            out = conv(self.mid_features, 3, padding=pad(3), feature_group_count=self.groups,
                       name="conv2b")(act(out))
        # The branch starts switched off: through the last conv's gain, or through the
        # scalar skipinit gain when that is used instead.
        last_gain = 1.0 if (self.skipinit or not self.zero_init_last) else 0.0
        out = conv(self.out_features, 1, padding=pad(1), gain_init=last_gain, name="conv3")(act(out))
        if self.se_features:
            out = self.attn_gain * SqueezeExcite(
                rd_channels=self.se_features, dtype=self.dtype, name="attn_last")(out)
        out = module_drop_path(self, out, self.drop_path_rate, deterministic=not train)
        if self.skipinit:
            init = nn.initializers.zeros if self.zero_init_last else nn.initializers.ones
            out = out * self.param("skipinit_gain", init, ())
        return out * self.alpha + shortcut


class NormFreeNet(nn.Module):
    """Normalizer-free ResNet / NFNet (Brock et al., 2021), timm-compatible.

    ``stem_type``: '7x7_pool' (NF-ResNet) or 'deep_quad' (NFNet's 4-conv stem) among others.
    ``gamma_in_act`` multiplies each activation by its gamma (DeepMind weights) instead of
    folding gamma into the conv scale.  ``same_padding`` uses TF 'SAME' convs (DeepMind).
    ``zero_init_last=False`` starts every residual branch switched on (tiny test models).
    """

    depths: Sequence[int]
    channels: Sequence[int]
    alpha: float = 0.2
    stem_type: str = "3x3"
    stem_chs: int | None = None
    group_size: int | None = None
    se_ratio: float = 0.0  # SE reduction ratio; 0 disables SE
    se_divisor: int = 8
    attn_gain: float = 2.0
    width_factor: float = 1.0
    bottle_ratio: float = 0.5
    num_features: int = 0  # width of a final 1x1 conv; 0 = none
    ch_div: int = 8
    extra_conv: bool = False
    gamma_in_act: bool = False
    same_padding: bool = False
    std_conv_eps: float = 1e-5
    skipinit: bool = False
    zero_init_last: bool = True
    act: str = "relu"
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"NormFreeNet expects NHWC images of rank 4, got shape {x.shape}")
        if self.act not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; one of {sorted(_ACTIVATIONS)}")
        if self.stem_type not in _STEM_TYPES:
            raise ValueError(f"unknown stem_type {self.stem_type!r}; one of {_STEM_TYPES}")
        if len(self.depths) != len(self.channels):
            raise ValueError(f"depths {tuple(self.depths)} and channels {tuple(self.channels)} "
                             "must have the same length")

        gamma = NONLIN_GAMMA[self.act]
        base_act = _ACTIVATIONS[self.act]
        if self.gamma_in_act:
            act = lambda v: base_act(v) * gamma
            conv = partial(ScaledStdConv, eps=self.std_conv_eps, dtype=self.dtype)
        else:
            act = base_act
            conv = partial(ScaledStdConv, gamma=gamma, eps=self.std_conv_eps, dtype=self.dtype)

        def pad(k, s=1):
            return "SAME" if self.same_padding else torch_padding(k, s)

        # -- stem ----------------------------------------------------------------------
        stem_chs = make_divisible((self.stem_chs or self.channels[0]) * self.width_factor,
                                  self.ch_div)
        stem_stride = 2
        if "deep" in self.stem_type:
            if "quad" in self.stem_type:
                widths, strides = (stem_chs // 8, stem_chs // 4, stem_chs // 2, stem_chs), (2, 1, 1, 2)
                stem_stride = 4
            elif "tiered" in self.stem_type:
                widths, strides = (3 * stem_chs // 8, stem_chs // 2, stem_chs), (2, 1, 1)
            else:
                widths, strides = (stem_chs // 2, stem_chs // 2, stem_chs), (2, 1, 1)
            for i, (c, s) in enumerate(zip(widths, strides)):
                if i:
                    x = act(x)  # no activation after the last stem conv: blocks pre-activate
                x = conv(c, 3, strides=s, padding=pad(3, s), name=f"stem_conv{i + 1}")(x)
        else:
            k = 3 if "3x3" in self.stem_type else 7
            x = conv(stem_chs, k, strides=2, padding=pad(k, 2), name="stem_conv")(x)
        if "pool" in self.stem_type:
            x = max_pool(x, 3, 2, 1)
            stem_stride = 4

        # -- stages --------------------------------------------------------------------
        total = sum(self.depths)
        # Linear in block index from 0 to drop_path_rate, as timm.
        dpr = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        prev = stem_chs
        expected_var = 1.0
        idx = 0
        for si, depth in enumerate(self.depths):
            stride = 1 if si == 0 and stem_stride > 2 else 2
            out_chs = make_divisible(self.channels[si] * self.width_factor, self.ch_div)
            mid = make_divisible(out_chs * self.bottle_ratio, self.ch_div)
            groups = mid // self.group_size if self.group_size else 1
            if self.group_size and self.group_size % self.ch_div == 0:
                mid = self.group_size * groups
            se = (make_divisible(out_chs * self.se_ratio, self.se_divisor, round_limit=0.0)
                  if self.se_ratio else 0)
            for bi in range(depth):
                s = stride if bi == 0 else 1
                x = NormFreeBlock(
                    out_features=out_chs, mid_features=mid, groups=groups, stride=s,
                    alpha=self.alpha, beta=1.0 / math.sqrt(expected_var),
                    downsample=(prev != out_chs or s != 1), extra_conv=self.extra_conv,
                    se_features=se, attn_gain=self.attn_gain, skipinit=self.skipinit,
                    zero_init_last=self.zero_init_last, drop_path_rate=dpr[idx], act=act,
                    conv=conv, same_padding=self.same_padding, dtype=self.dtype,
                    name=f"stages_{si}_{bi}")(x, train=train)
                # Signal variance grows by alpha^2 per block and is reset by the transition.
                if bi == 0:
                    expected_var = 1.0
                expected_var += self.alpha ** 2
                prev = out_chs
                idx += 1

        if self.num_features:
            feats = make_divisible(self.width_factor * self.num_features, self.ch_div)
            x = conv(feats, 1, padding=pad(1), name="final_conv")(x)
        x = act(x)

        # -- head ----------------------------------------------------------------------
        return classifier_head(x, self.num_classes, name="head_fc", train=train,
                               drop_rate=self.drop_rate, pool=True, dtype=self.dtype,
                               kernel_init=nn.initializers.normal(0.01))


# -- variants -------------------------------------------------------------------------------
def _nf_resnet(depths, channels=(256, 512, 1024, 2048), **kw):
    """Pre-activation NF-ResNet: 7x7 stem + max pool, ReLU, 1/4 bottlenecks."""
    cfg = {"depths": depths, "channels": channels, "stem_type": "7x7_pool", "stem_chs": 64,
               "bottle_ratio": 0.25, "act": "relu"}
    return NormFreeNet(**{**cfg, **kw})


def _nfnet(depths, channels=(256, 512, 1536, 1536), feat_mult=2.0, **kw):
    """NFNet-F: deep 4-conv stem, grouped (width 128) bottlenecks with two 3x3s, SE, GELU."""
    cfg = {"depths": depths, "channels": channels, "stem_type": "deep_quad", "stem_chs": 128,
               "group_size": 128, "bottle_ratio": 0.5, "extra_conv": True,
               "num_features": int(channels[-1] * feat_mult), "act": "gelu", "se_ratio": 0.5}
    return NormFreeNet(**{**cfg, **kw})


def _dm_nfnet(depths, **kw):
    """NFNet-F laid out as DeepMind's release: gamma inside the activation, TF 'SAME' convs,
    and skipinit gains."""
    return _nfnet(depths, **{"gamma_in_act": True, "same_padding": True, "skipinit": True, **kw})


_F_DEPTHS = {i: (1 + i, 2 * (1 + i), 6 * (1 + i), 3 * (1 + i)) for i in range(8)}
_F_SIZES = {0: 192, 1: 224, 2: 256, 3: 320, 4: 384, 5: 416, 6: 448, 7: 480}
_DM_CROP = {0: 0.9, 1: 0.91, 2: 0.92, 3: 0.94, 4: 0.951, 5: 0.954, 6: 0.956}


def _reg(size, crop_pct, **kw):
    return register_model(input_size=(size, size, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          crop_pct=crop_pct, **kw)


@_reg(224, 0.9)
def nf_resnet26(**kwargs):
    return _nf_resnet((2, 2, 2, 2), **kwargs)


@_reg(256, 0.94)
def nf_resnet50(**kwargs):
    return _nf_resnet((3, 4, 6, 3), **kwargs)


@_reg(224, 0.9)
def nf_resnet101(**kwargs):
    return _nf_resnet((3, 4, 23, 3), **kwargs)


@_reg(_F_SIZES[0], _DM_CROP[0])
def dm_nfnet_f0(**kwargs):
    return _dm_nfnet(_F_DEPTHS[0], **kwargs)


@_reg(_F_SIZES[1], _DM_CROP[1])
def dm_nfnet_f1(**kwargs):
    return _dm_nfnet(_F_DEPTHS[1], **kwargs)


@_reg(_F_SIZES[2], _DM_CROP[2])
def dm_nfnet_f2(**kwargs):
    return _dm_nfnet(_F_DEPTHS[2], **kwargs)


@_reg(_F_SIZES[3], _DM_CROP[3])
def dm_nfnet_f3(**kwargs):
    return _dm_nfnet(_F_DEPTHS[3], **kwargs)


@_reg(_F_SIZES[4], _DM_CROP[4])
def dm_nfnet_f4(**kwargs):
    return _dm_nfnet(_F_DEPTHS[4], **kwargs)


@_reg(_F_SIZES[5], _DM_CROP[5])
def dm_nfnet_f5(**kwargs):
    return _dm_nfnet(_F_DEPTHS[5], **kwargs)


@_reg(_F_SIZES[6], _DM_CROP[6])
def dm_nfnet_f6(**kwargs):
    return _dm_nfnet(_F_DEPTHS[6], **kwargs)


@_reg(_F_SIZES[0], 0.9)
def nfnet_f0(**kwargs):
    return _nfnet(_F_DEPTHS[0], **kwargs)


@_reg(_F_SIZES[1], 0.9)
def nfnet_f1(**kwargs):
    return _nfnet(_F_DEPTHS[1], **kwargs)


@_reg(_F_SIZES[2], 0.9)
def nfnet_f2(**kwargs):
    return _nfnet(_F_DEPTHS[2], **kwargs)


@_reg(_F_SIZES[3], 0.9)
def nfnet_f3(**kwargs):
    return _nfnet(_F_DEPTHS[3], **kwargs)


@_reg(_F_SIZES[4], 0.9)
def nfnet_f4(**kwargs):
    return _nfnet(_F_DEPTHS[4], **kwargs)


@_reg(_F_SIZES[5], 0.9)
def nfnet_f5(**kwargs):
    return _nfnet(_F_DEPTHS[5], **kwargs)


@_reg(_F_SIZES[6], 0.9)
def nfnet_f6(**kwargs):
    return _nfnet(_F_DEPTHS[6], **kwargs)


@_reg(_F_SIZES[7], 0.9)
def nfnet_f7(**kwargs):
    return _nfnet(_F_DEPTHS[7], **kwargs)


# Tiny variants.  Their residual branches start switched on (zero_init_last=False) so that a
# single training step gives every parameter a gradient.
@register_model(input_size=(32, 32, 3), num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD)
def test_nf_resnet(**kwargs):
    return _nf_resnet((1, 1, 1, 1), channels=(16, 32, 48, 64), stem_chs=16,
                      **{"num_classes": 10, "zero_init_last": False, **kwargs})


# Same architecture as timm's ``test_nfnet`` (so its weights convert), at a small input size.
@register_model(input_size=(32, 32, 3), mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.95)
def test_nfnet(**kwargs):
    return _nfnet((1, 1, 1, 1), channels=(32, 64, 96, 128), feat_mult=1.5,
                  **{"group_size": 8, "bottle_ratio": 0.25, "se_ratio": 0.25, "act": "silu",
                            "zero_init_last": False, **kwargs})
