"""Classification losses on soft targets.

Targets are always ``(B, num_classes)`` distributions: one-hot labels, smoothed labels
(Szegedy et al., 2016: q' = (1 - eps) q + eps / K) or mixed labels (mixup, CutMix).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def one_hot_checked(labels, num_classes: int):
    """One-hot labels.  Unlike ``jax.nn.one_hot``, which silently maps labels outside
    ``[0, num_classes)`` to all-zero rows, callers validate labels before this (see
    ``jaxvision.data.pipeline.validate_split``)."""
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def smooth_labels(targets, smoothing: float):
    """Label-smoothing regularisation: q' = (1 - eps) q + eps u, with u uniform over K."""
    if not smoothing:
        return targets
    k = targets.shape[-1]
    return targets * (1.0 - smoothing) + smoothing / k


def cross_entropy(logits, targets):
    """Per-example H(q, p) with p = softmax(logits), computed in float32."""
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def margin_loss(lengths, targets, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5):
    """CapsNet margin loss (Sabour et al., 2017), per example:
    sum_k T_k max(0, m+ - ||v_k||)^2 + lambda (1 - T_k) max(0, ||v_k|| - m-)^2."""
    lengths = lengths.astype(jnp.float32)
    pos = targets * jnp.square(jnp.maximum(0.0, m_plus - lengths))
    neg = lam * (1.0 - targets) * jnp.square(jnp.maximum(0.0, lengths - m_minus))
    return jnp.sum(pos + neg, axis=-1)


LOSSES = {"softmax_xent": cross_entropy, "margin": margin_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
