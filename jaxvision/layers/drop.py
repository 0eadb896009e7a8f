"""Stochastic depth / drop path (Huang et al., 2016, "Deep Networks with Stochastic Depth").

During training a residual branch is dropped for a whole sample with probability ``rate``;
surviving branches are scaled by ``1 / (1 - rate)`` so that the expected output equals the
eval-mode output (the "inverted" form used by timm's ``DropPath``).  Randomness comes from
the ``'dropout'`` RNG stream.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None, *, deterministic: bool,
              scale_by_keep: bool = True) -> jax.Array:
    """Zero ``x`` for a random subset of samples (leading axis) with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"drop path rate must be in [0, 1], got {rate}")
    if deterministic or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    if rng is None:
        raise ValueError("drop_path in training mode needs an rng ('dropout' stream)")
    keep = 1.0 - rate
    # One Bernoulli draw per sample, broadcast over every other axis.
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    if scale_by_keep:
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))
    return jnp.where(mask, x, jnp.zeros_like(x))


class DropPath(nn.Module):
    """Per-sample drop of a residual branch (stochastic depth, Huang et al., 2016).

    ``deterministic`` may be given at construction or call time (call time wins), like
    ``flax.linen.Dropout``.  A rate of 0 is the identity and draws no random numbers.
    """

    rate: float = 0.0
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return x
        rng = self.make_rng(self.rng_collection) if self.rate < 1.0 else None
        return drop_path(x, self.rate, rng, deterministic=False,
                         scale_by_keep=self.scale_by_keep)


def module_drop_path(module: nn.Module, x: jax.Array, rate: float, *,
                     deterministic: bool) -> jax.Array:
    """:func:`drop_path` called inside ``module``'s own ``__call__``, drawing its mask from
    that module's ``'dropout'`` stream: no submodule (and no new RNG scope) appears, for
    blocks whose layout follows a reference without a separate drop-path layer."""
    if deterministic or rate == 0.0:
        return x
    rng = module.make_rng("dropout") if rate < 1.0 else None
    return drop_path(x, rate, rng, deterministic=False)


def linear_drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Stochastic depth's linear decay rule: block ``i`` of ``n`` drops with
    ``rate * i / (n - 1)`` (the first block never, the last with ``rate``)."""
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


__all__ = ["DropPath", "drop_path", "linear_drop_path_rates", "module_drop_path"]
