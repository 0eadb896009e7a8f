"""Max-norm constraint ``||w||_2 <= c`` (Srivastava et al., 2014; used with maxout by
Goodfellow et al., 2013).

The constraint acts on the vector of incoming weights of each hidden unit: for a Dense
kernel ``(in, out)`` that is each column, for a conv kernel ``(kh, kw, in, out)`` each output
filter.  After every update, a vector that left the ball of radius ``c`` is scaled back to its
surface; vectors inside stay exactly as they are.  It is a projection of the *parameters*, not
a gradient transformation, so:

* :func:`project_max_norm` projects a parameter tree (call it after ``optax.apply_updates``);
* :func:`max_norm` wraps it as an optax ``GradientTransformation`` that rewrites the final
  update to ``project(params + update) - params``.  Put it LAST in the chain (after the
  learning-rate scaling) and pass ``params`` to ``tx.update``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def _default_mask(params):
    # Kernels (ndim >= 2) carry the incoming weight vectors; biases, norm scales are free.
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _resolve_mask(params, mask):
    if mask is None:
        return _default_mask(params)
    if callable(mask):
        return mask(params)
    return mask


def _project_leaf(w, c, eps):
    if jnp.ndim(w) < 2:
        raise ValueError(f"max-norm needs a kernel with >= 2 dims (got shape {jnp.shape(w)}); "
                         "exclude it with the mask")
    axes = tuple(range(jnp.ndim(w) - 1))
    norms = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
    scale = jnp.where(norms > c, c / (norms + eps), 1.0)
    # `where` on the weights, not only the scale: columns inside stay bit-identical.
    return jnp.where(norms > c, w * scale.astype(w.dtype), w)


def project_max_norm(params, c: float, mask: Any = None, eps: float = 0.0):
    """Scale every incoming-weight vector (all axes but the last) with norm > ``c`` to norm
    ``c``.  ``mask``: a tree of bools like ``params``, a callable ``params -> mask``, or None
    (all leaves with ndim >= 2)."""
    if not c > 0:
        raise ValueError(f"max-norm radius c must be positive, got {c}")
    m = _resolve_mask(params, mask)
    return jax.tree.map(lambda w, on: _project_leaf(w, c, eps) if on else w, params, m)


def max_norm(c: float, mask: Any = None, eps: float = 0.0) -> optax.GradientTransformation:
    """optax transform: replaces ``update`` by ``project(params + update) - params``.

    Must be the last transform of a chain; ``tx.update(grads, state, params)`` needs params.
    """
    if not c > 0:
        raise ValueError(f"max-norm radius c must be positive, got {c}")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("max_norm needs params: call tx.update(grads, state, params)")
        new = optax.apply_updates(params, updates)
        projected = project_max_norm(new, c, mask, eps)
        return jax.tree.map(lambda p, q: (q - p).astype(p.dtype), params, projected), state

    return optax.GradientTransformation(init_fn, update_fn)



__all__ = ["max_norm", "project_max_norm"]
