"""Activations, including the parametric rectifier (He et al., 2015).

``create_act(act, name)`` turns an ``act_layer`` option into a callable, so model families can
offer ``act_layer='relu' | 'prelu' | 'prelu_shared' | 'tanh' | ...`` or any callable.
Parametric activations become submodules and must therefore be created inside a compact
``__call__`` with a unique ``name``.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp


class PReLU(nn.Module):
    """Parametric ReLU ``f(y_i) = max(0, y_i) + a_i min(0, y_i)`` (He et al., 2015).

    ``channel_shared=False`` learns one slope ``a_i`` per channel (last axis); ``True`` learns
    one slope for the whole layer.  Slopes start at ``init_value=0.25`` as in the paper and
    should not be weight-decayed (the paper trains them without decay).
    """

    channel_shared: bool = False
    init_value: float = 0.25
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        shape = (1,) if self.channel_shared else (x.shape[-1],)
        a = self.param("alpha", nn.initializers.constant(self.init_value), shape, self.param_dtype)
        x = x.astype(self.dtype)
        return jnp.where(x >= 0, x, a.astype(self.dtype) * x)


def scaled_tanh(x):
    """LeCun's scaled hyperbolic tangent ``1.7159 tanh(2x/3)``, used by Ciresan et al."""
    return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


_FUNCTIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "scaled_tanh": scaled_tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,  # slope 0.01
    "lrelu_0.25": lambda x: nn.leaky_relu(x, 0.25),  # the paper's fixed-slope baseline
    "identity": lambda x: x,
}
_PARAMETRIC = ("prelu", "prelu_shared")
ACT_NAMES = tuple(sorted(_FUNCTIONS)) + _PARAMETRIC


def create_act(act: str | Callable, name: str | None = None, dtype: Any = jnp.float32):
    """The activation ``act`` names; ``'prelu'`` / ``'prelu_shared'`` build a :class:`PReLU`
    submodule called ``name`` (call inside a compact method)."""
    if callable(act):
        return act
    if not isinstance(act, str):
        raise TypeError(f"act_layer must be a name or a callable, got {type(act).__name__}")
    if act in _PARAMETRIC:
        return PReLU(channel_shared=act == "prelu_shared", dtype=dtype, name=name)
    if act not in _FUNCTIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACT_NAMES)} "
                         "or pass a callable")
    return _FUNCTIONS[act]


__all__ = ["ACT_NAMES", "PReLU", "create_act", "scaled_tanh"]
