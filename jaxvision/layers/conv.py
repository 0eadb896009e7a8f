"""Convolution with a backend- and shape-aware implementation choice.

``Conv`` is ``flax.linen.Conv`` with the same parameters (``kernel`` HWIO, ``bias``) and
initialisers, so variables, checkpoints and converted weights do not depend on which
implementation computes the convolution.  ``conv_general_dilated`` has the signature of
``jax.lax.conv_general_dilated`` and picks the implementation per call.
"""
from __future__ import annotations

import flax.linen as nn

from jaxvision.layers import conv_impl as _conv_impl

# He (Kaiming) initialisation, the default for ReLU networks (He et al., 2015):
# w ~ N(0, sqrt(2 / n_l)) with n_l = k*k*c the fan-in.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# torch's nn.init.kaiming_normal_(mode='fan_out'), used by torchvision ResNets.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """Drop-in for ``lax.conv_general_dilated`` that avoids known slow paths.

    On XLA:CPU, shapes where the native convolution is slow are computed as matrix
    products (forward and both gradients, see :mod:`jaxvision.layers.conv_impl`); on
    GPU/TPU this is ``lax.conv_general_dilated``.  ``JAXVISION_CONV_IMPL=lax|matmul|auto``
    (read at trace time) forces a choice.
    """
    return _conv_impl.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)


def Conv(features, kernel_size, *args, kernel_init=he_normal, **kwargs) -> nn.Conv:  # noqa: N802
    """``nn.Conv`` computed by :func:`conv_general_dilated`; He-normal init by default."""
    kwargs.setdefault("conv_general_dilated", conv_general_dilated)
    return nn.Conv(features, kernel_size, *args, kernel_init=kernel_init, **kwargs)


def pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric explicit padding, as torch's ``padding=p`` (``'SAME'`` differs at stride 2)."""
    return ((p, p), (p, p))


def tuple2(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


__all__ = ["Conv", "conv_general_dilated", "he_normal", "he_normal_fan_out", "pad", "tuple2"]
