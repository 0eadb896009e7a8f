"""The classifier head every family ends with: [global average pool] -> [dropout] -> Dense.

:func:`classifier_head` is a function, not a module: it is called inside a model's own
``__call__`` so that its ``Dense`` (and ``Dropout``) belong to the model itself, under the
names the reference implementation uses (``fc``, ``head``, ``classifier``, ...), and converted
weights keep their places.  ``num_classes=0`` returns the features the Dense would have read,
so one model serves as a classifier and as a feature extractor.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def classifier_head(x: jax.Array, num_classes: int, *, name: str, train: bool = False,
                    drop_rate: float | None = None, pool: bool = False,
                    dtype: Any = jnp.float32, **dense_kwargs) -> jax.Array:
    """Logits ``(B, num_classes)`` from features ``x``; the features when ``num_classes == 0``.

    ``pool``: average ``(B, H, W, C)`` over H and W first.  ``drop_rate``: dropout before
    the Dense (``None``: no dropout layer at all).  ``name``: the Dense's name.  Further
    keyword arguments (``kernel_init``, ``bias_init``) go to ``nn.Dense``.  Must be called
    from inside a module's compact ``__call__``.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0: return features), got {num_classes}")
    if pool:
        x = jnp.mean(x, axis=(1, 2))  # global average pooling -> (B, C)
    if num_classes == 0:
        return x
    if drop_rate is not None:
        x = nn.Dropout(drop_rate, deterministic=not train)(x)
    return nn.Dense(num_classes, dtype=dtype, name=name, **dense_kwargs)(x)


__all__ = ["classifier_head"]
