"""Convolution with Scaled Weight Standardization (Brock et al., 2021).

Normalizer-free networks keep activations well scaled without batch statistics by
standardising every output filter of the kernel before it is used:

    W_hat[..., o] = gain[o] * gamma * (W[..., o] - mean_o) / sqrt((var_o + eps) * fan_in)

with mean/var taken over the filter's (kh, kw, in/groups) entries (biased variance) and
``gamma`` the activation's variance-correcting constant (1 when the activation carries it).
The arithmetic follows timm's ``ScaledStdConv2d`` (``F.batch_norm`` over the flattened
kernel), so torch weights convert without change.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxvision.layers.conv import conv_general_dilated, tuple2

PaddingLike = str | Sequence[tuple[int, int]]


def same_padding(in_hw: Sequence[int], kernel_size, strides, dilation) -> tuple:
    """TensorFlow 'SAME' padding for static input sizes (extra pixel after, as TF and timm)."""
    k, s, d = tuple2(kernel_size), tuple2(strides), tuple2(dilation)
    return tuple(lax.padtype_to_pads(tuple(in_hw), [(kk - 1) * dd + 1 for kk, dd in zip(k, d)],
                                     s, "SAME"))


class ScaledStdConv(nn.Module):
    """2-D convolution on a scaled, weight-standardised HWIO kernel (NF-ResNets, NFNets).

    Parameters are ``kernel`` (kh, kw, in/groups, out), ``bias`` (out,) and ``gain`` (out,).
    ``padding`` is explicit pairs (torch-style) or ``'SAME'`` (TF-style, computed from the
    static input size, as timm's ``ScaledStdConv2dSame``).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    gamma: float = 1.0
    eps: float = 1e-6
    gain_init: float = 1.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    # Fan-in variance scaling, as timm's init (kaiming_normal, nonlinearity='linear'); the
    # standardisation makes the kernel's scale irrelevant to the forward pass anyway.
    kernel_init: Callable = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    bias_init: Callable = nn.initializers.zeros

    def standardized_kernel(self, kernel: jnp.ndarray, gain: jnp.ndarray) -> jnp.ndarray:
        fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)  # biased, as F.batch_norm
        scale = gain * (self.gamma * fan_in ** -0.5)
        return (kernel - mean) * lax.rsqrt(var + self.eps) * scale

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 4:
            raise ValueError(f"ScaledStdConv expects NHWC input of rank 4, got shape {x.shape}")
        in_features = x.shape[-1]
        if in_features % self.feature_group_count:
            raise ValueError(f"input channels {in_features} are not divisible by "
                             f"feature_group_count={self.feature_group_count}")
        kh, kw = tuple2(self.kernel_size)
        kernel = self.param("kernel", self.kernel_init,
                            (kh, kw, in_features // self.feature_group_count, self.features),
                            self.param_dtype)
        gain = self.param("gain", nn.initializers.constant(self.gain_init), (self.features,),
                          self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)

        # Standardise in the parameter dtype (float32): the statistics are of the weights,
        # not of the activations, and must not be computed in bfloat16.
        w = self.standardized_kernel(kernel, gain)
        x, w, bias = nn.dtypes.promote_dtype(x, w, bias, dtype=self.dtype)

        strides, dilation = tuple2(self.strides), tuple2(self.kernel_dilation)
        if isinstance(self.padding, str):
            if self.padding.upper() != "SAME":
                raise ValueError(f"ScaledStdConv padding must be 'SAME' or explicit pairs, "
                                 f"got {self.padding!r}")
            padding = same_padding(x.shape[1:3], (kh, kw), strides, dilation)
        else:
            padding = tuple(tuple(p) for p in self.padding)
        y = conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=self.feature_group_count)
        if bias is not None:
            y = y + bias
        return y


__all__ = ["ScaledStdConv", "same_padding"]
