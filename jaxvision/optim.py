"""Optimizers and learning-rate schedules from config, as visible optax chains.

Conventions follow Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019),
Algorithms 1 and 2: ``config.learning_rate`` is the base rate ``alpha``; the schedule gives
the multiplier ``eta_t``; ``config.weight_decay`` is ``lambda``.

* SGD (Alg. 1):  m_t = beta m_{t-1} + eta_t alpha g_t;  theta_t = theta_{t-1} - m_t [- eta_t lambda theta]
  The rate enters *before* the momentum buffer, which is also Goyal et al.'s (2017)
  "momentum correction": no spike when the rate changes.  With a constant rate it equals
  torch's ``SGD(lr, momentum)``.
* Adam (Alg. 2):  theta_t = theta_{t-1} - eta_t (alpha m_hat / (sqrt(v_hat) + eps) [+ lambda theta])
* ``decay_type='coupled'`` adds ``lambda theta`` to the gradient (L2 regularisation: SGD, Adam);
  ``'decoupled'`` subtracts ``eta_t lambda theta`` from the weights (SGDW, AdamW).  Note that
  torch/optax ``AdamW(lr, weight_decay=wd)`` decays by ``lr_t * wd``: use ``lambda = alpha * wd``.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import optax

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine", "sgdr", "linear")


def scaled_learning_rate(config, global_batch: int) -> float:
    """Linear scaling rule (Goyal et al., 2017): lr = base_lr * batch / 256, when asked for."""
    if config.lr_scaling == "linear":
        return config.learning_rate * global_batch / 256
    if config.lr_scaling in ("", "none", None):
        return config.learning_rate
    raise ValueError(f"unknown lr_scaling {config.lr_scaling!r}; use 'linear' or 'none'")


def make_schedule(config, total_steps: int, steps_per_epoch: int) -> Callable:
    """The multiplier eta_t in [0, 1] (times ``1`` at the peak), warmup included."""
    warmup = int(config.warmup_steps or round(config.warmup_epochs * steps_per_epoch))
    main_steps = max(total_steps - warmup, 1)
    name = config.schedule
    if name == "constant":
        main = optax.constant_schedule(1.0)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(1.0, main_steps, alpha=config.min_lr_ratio)
    elif name == "linear":
        main = optax.linear_schedule(1.0, config.min_lr_ratio, main_steps)
    elif name == "step":
        bounds = [int(round(e * steps_per_epoch)) - warmup for e in config.step_epochs]
        main = optax.piecewise_constant_schedule(
            1.0, {b: config.step_gamma for b in bounds if b > 0})
    elif name == "sgdr":
        main = sgdr_multiplier(config.sgdr_t0 * steps_per_epoch, config.sgdr_tmult,
                               main_steps, config.min_lr_ratio)
    else:
        import difflib
        close = difflib.get_close_matches(str(name), SCHEDULES, n=1)
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}"
                         + (f". Did you mean {close[0]!r}?" if close else ""))
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(config.warmup_init, 1.0, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def sgdr_multiplier(t0_steps: float, t_mult: float, total_steps: int, min_ratio: float = 0.0):
    """SGDR warm restarts (Loshchilov & Hutter, 2017) as optax's ``sgdr_schedule``:
    eta = eta_min + (eta_max - eta_min)(1 + cos(pi T_cur / T_i)) / 2 with T_i = T0 * Tmult^i.
    ``T_cur`` advances every step, so it takes fractional epoch values as in the paper."""
    cycles, t, length = [], 0, float(t0_steps)
    while t < total_steps:
        n = max(int(round(length)), 1)
        cycles.append(dict(init_value=1.0, peak_value=1.0, warmup_steps=0, decay_steps=n,
                           end_value=min_ratio))
        t += n
        length *= t_mult
    return optax.sgdr_schedule(cycles)


def decay_mask(params, rule: str = "no_bias_no_norm"):
    """True for parameters that get weight decay.  By default biases, norm scales and other
    vectors (ndim <= 1: PReLU slopes, gains, layer scales) are excluded."""
    if rule == "all":
        return jax.tree.map(lambda _: True, params)
    if rule == "no_bias_no_norm":
        return jax.tree.map(lambda p: p.ndim > 1, params)
    raise ValueError(f"unknown weight_decay_mask {rule!r}; use 'no_bias_no_norm' or 'all'")


def _agc_mask(params, exclude: tuple[str, ...]):
    def keep(path, p):
        names = [str(getattr(k, "key", k)) for k in path]
        return p.ndim > 1 and not any(e in names for e in exclude)
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(config, params, total_steps: int, steps_per_epoch: int, global_batch: int):
    """The optax chain for ``config`` (see the module docstring for the exact rules).
    Returns ``(tx, lr_fn)`` with ``lr_fn(step)`` the effective learning rate for logging."""
    alpha = scaled_learning_rate(config, global_batch)
    schedule = make_schedule(config, total_steps, steps_per_epoch)
    lam = config.weight_decay
    decay_mask(params, config.weight_decay_mask)  # an unknown rule fails here, early
    # callables, applied to the tree each update sees (a subset under ``freeze``)
    mask = lambda p: decay_mask(p, config.weight_decay_mask)  # noqa: E731
    coupled = config.decay_type == "coupled"
    if config.decay_type not in ("coupled", "decoupled"):
        raise ValueError(f"decay_type must be 'coupled' (L2) or 'decoupled' (SGDW/AdamW), got "
                         f"{config.decay_type!r}")

    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.agc_clip:
        # Adaptive gradient clipping (Brock et al., 2021), unit-wise; not on the classifier.
        parts.append(optax.masked(optax.adaptive_grad_clip(config.agc_clip),
                                  lambda p: _agc_mask(p, tuple(config.agc_exclude))))
    if lam and coupled:
        parts.append(optax.add_decayed_weights(lam, mask))
    if config.optimizer == "sgd":
        parts += [
            optax.scale_by_schedule(lambda t: alpha * schedule(t)),
            optax.trace(decay=config.momentum, nesterov=config.nesterov) if config.momentum
            else optax.identity(),
        ]
        if lam and not coupled:
            parts.append(optax.add_decayed_weights(lambda t: lam * schedule(t), mask))
        parts.append(optax.scale(-1.0))
    elif config.optimizer == "adam":
        parts += [optax.scale_by_adam(b1=config.beta1, b2=config.beta2, eps=config.adam_eps),
                  optax.scale(alpha)]
        if lam and not coupled:
            parts.append(optax.add_decayed_weights(lam, mask))
        parts.append(optax.scale_by_schedule(lambda t: -schedule(t)))
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS} "
                         f"(with decay_type='decoupled' for SGDW / AdamW)")
    tx = optax.chain(*parts)
    if config.get("freeze"):
        tx = freeze(tx, params, config.freeze)
    return tx, (lambda step: alpha * schedule(step))


def frozen_mask(params, patterns: str):
    """True for parameters whose '/'-joined path matches one of the comma-separated fnmatch
    ``patterns`` (e.g. ``"stem*,stages_0*"``); an error when none or all match."""
    import fnmatch
    pats = [p.strip() for p in str(patterns).split(",") if p.strip()]

    def hit(path, _):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return any(fnmatch.fnmatchcase(name, p) for p in pats)
    mask = jax.tree_util.tree_map_with_path(hit, params)
    n, total = sum(jax.tree.leaves(mask)), len(jax.tree.leaves(mask))
    if n == 0:
        names = ["/".join(str(getattr(k, "key", k)) for k in p)
                 for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ValueError(f"freeze={patterns!r} matches no parameter; paths look like "
                         f"{', '.join(names[:4])}")
    if n == total:
        raise ValueError(f"freeze={patterns!r} matches every parameter: nothing would train")
    return mask


def freeze(tx, params, patterns: str):
    """``tx`` for the trainable parameters; zero updates (and no optimizer state) for those
    matching ``patterns`` (``optax.multi_transform`` with ``optax.set_to_zero``)."""
    mask = frozen_mask(params, patterns)
    labels = jax.tree.map(lambda m: "frozen" if m else "train", mask)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def steps_from(value_steps, value_epochs, steps_per_epoch: int) -> int:
    """Durations may be given in steps or epochs; steps win when both are set."""
    if value_steps:
        return int(value_steps)
    return int(math.ceil(float(value_epochs) * steps_per_epoch))

