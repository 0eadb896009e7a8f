"""Local response normalisation across channels (Krizhevsky et al., 2012).

For the activity ``a^i`` of channel ``i`` at one position, with ``N`` channels,

    b^i = a^i / (k + alpha * sum_{j=max(0, i-n//2)}^{min(N-1, i+(n-1)//2)} (a^j)^2) ** beta

i.e. a sum of squares over a window of ``n`` neighbouring channels centred on ``i``
(for odd ``n``, the paper's ``n = 5``, this is exactly the lecture formula with bounds
``i -+ n/2``), clipped at the first and last channel.

Two conventions for ``alpha`` exist and both are exposed:

* ``average=False`` (the paper, the lecture): ``alpha`` multiplies the *sum* of squares.
  AlexNet / VGG A-LRN use ``k=2, n=5, alpha=1e-4, beta=0.75`` in this form.
* ``average=True`` (``torch.nn.LocalResponseNorm``, Caffe): ``alpha`` multiplies the *mean*,
  i.e. the sum is divided by ``n`` (zero-padded channels count in the mean).  The paper's
  layer equals torch's with ``alpha_torch = n * alpha_paper``.

For even ``n`` the window runs from ``i - n//2`` to ``i + n//2 - 1``, as in torch.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def local_response_norm(x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0, average: bool = False):
    """Normalise ``x`` (..., C) over ``size`` neighbouring channels of the last axis."""
    if size < 1:
        raise ValueError(f"LRN size must be >= 1, got {size}")
    c = x.shape[-1]
    lo, hi = size // 2, (size - 1) // 2
    sq = jnp.square(x)
    padded = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(lo, hi)])
    # A sum of `size` shifted views: static slices, cheap for the small windows in use.
    window = sum(padded[..., d:d + c] for d in range(size))
    if average:
        window = window / size
    return x / jnp.power(k + alpha * window, beta)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN layer; ``average=True`` gives ``torch.nn.LocalResponseNorm``."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    average: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = local_response_norm(x.astype(jnp.float32), self.size, self.alpha, self.beta,
                                self.k, self.average)
        return y.astype(self.dtype)


__all__ = ["LocalResponseNorm", "local_response_norm"]
