"""Optimizer chains and schedules against the formulas of the lecture's papers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision import optim
from jaxvision.config import default_config


def cfg(**kw):
    c = default_config()
    c.update_from_flattened_dict(kw)
    return c


# ------------------------------- schedules ------------------------------------------------

def test_sgdr_matches_formula():
    """eta_t = eta_min + (eta_max - eta_min)(1 + cos(pi T_cur / T_i)) / 2, T_i = T0 Tmult^i."""
    spe, t0, tmult = 10, 2, 2
    sched = optim.make_schedule(cfg(schedule="sgdr", sgdr_t0=t0, sgdr_tmult=tmult,
                                    min_lr_ratio=0.0), total_steps=140, steps_per_epoch=spe)
    starts, lengths = [0, 20, 60], [20, 40, 80]
    for start, length in zip(starts, lengths):
        for t_cur in (0, 1, length // 3, length // 2, length - 1):
            want = 0.5 * (1 + math.cos(math.pi * t_cur / length))
            assert float(sched(start + t_cur)) == pytest.approx(want, abs=1e-6)
    # restarts: back to the maximum at the start of each cycle
    assert float(sched(20)) == pytest.approx(1.0) and float(sched(60)) == pytest.approx(1.0)


def test_linear_warmup_then_cosine():
    sched = optim.make_schedule(cfg(schedule="cosine", warmup_steps=10, warmup_init=0.1),
                                total_steps=110, steps_per_epoch=10)
    for t in (0, 3, 7):
        assert float(sched(t)) == pytest.approx(0.1 + 0.9 * t / 10, abs=1e-6)
    for t in (10, 35, 60, 109):
        assert float(sched(t)) == pytest.approx(0.5 * (1 + math.cos(math.pi * (t - 10) / 100)),
                                                abs=1e-6)


def test_step_schedule_and_epoch_units():
    sched = optim.make_schedule(cfg(schedule="step", step_epochs=(3, 6), step_gamma=0.1),
                                total_steps=100, steps_per_epoch=10)
    assert float(sched(29)) == pytest.approx(1.0)
    assert float(sched(30)) == pytest.approx(0.1)
    assert float(sched(60)) == pytest.approx(0.01)
    assert optim.steps_from(0, 2.5, 10) == 25 and optim.steps_from(7, 2.5, 10) == 7


def test_linear_scaling_rule():
    """eta = 0.1 * |B| / 256 (Goyal et al., 2017)."""
    c = cfg(learning_rate=0.1, lr_scaling="linear")
    assert optim.scaled_learning_rate(c, 8192) == pytest.approx(0.1 * 8192 / 256)
    assert optim.scaled_learning_rate(cfg(learning_rate=0.1), 8192) == pytest.approx(0.1)


def test_unknown_schedule_and_optimizer_are_named():
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        optim.make_schedule(cfg(schedule="cosin"), 10, 1)
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        optim.make_optimizer(cfg(optimizer="sgdd"), {"w": jnp.ones((2, 2))}, 10, 1, 8)


# ------------------------- SGDW / AdamW vs the paper ------------------------------------

A = np.diag([1.0, 3.0, 0.5])
B = np.array([1.0, -2.0, 0.5])


def grad_f(theta):
    """Gradient of the quadratic f(theta) = 0.5 theta^T A theta - b^T theta."""
    return A @ theta - B


def paper_sgd(theta, steps, alpha, beta, lam, eta, decoupled):
    """Algorithm 1 of Loshchilov & Hutter (2019), transcribed line by line."""
    m = np.zeros_like(theta)
    out = []
    for t in range(1, steps + 1):
        g = grad_f(theta) + (0.0 if decoupled else lam * theta)          # line 6
        e = eta(t - 1)                                                     # line 7
        m = beta * m + e * alpha * g                                       # line 8
        theta = theta - m - (e * lam * theta if decoupled else 0.0)        # line 9
        out.append(theta)
    return np.stack(out)


def paper_adam(theta, steps, alpha, lam, eta, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    """Algorithm 2 of Loshchilov & Hutter (2019), transcribed line by line."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for t in range(1, steps + 1):
        g = grad_f(theta) + (0.0 if decoupled else lam * theta)          # line 6
        m = b1 * m + (1 - b1) * g                                          # line 7
        v = b2 * v + (1 - b2) * g * g                                      # line 8
        mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)                      # lines 9-10
        e = eta(t - 1)                                                     # line 11
        theta = theta - e * (alpha * mh / (np.sqrt(vh) + eps)             # line 12
                             + (lam * theta if decoupled else 0.0))
        out.append(theta)
    return np.stack(out)


def run_chain(config, steps):
    params = {"w": jnp.asarray([[0.5, -1.0, 2.0]])}  # 2-D so that weight decay applies
    tx, _ = optim.make_optimizer(config, params, total_steps=steps, steps_per_epoch=steps,
                                 global_batch=256)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        g = {"w": jnp.asarray(grad_f(np.asarray(params["w"][0], np.float64))[None],
                              jnp.float32)}
        upd, state = tx.update(g, state, params)
        params = optax.apply_updates(params, upd)
        out.append(np.asarray(params["w"][0]))
    return np.stack(out)


@pytest.mark.parametrize("decay_type", ["coupled", "decoupled"])
def test_sgd_and_sgdw_follow_algorithm_1(decay_type):
    steps = 30
    c = cfg(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.1,
            decay_type=decay_type, schedule="cosine")
    eta = optim.make_schedule(c, steps, steps)
    ours = run_chain(c, steps)
    ref = paper_sgd(np.array([0.5, -1.0, 2.0]), steps, 0.05, 0.9, 0.1,
                    lambda t: float(eta(t)), decay_type == "decoupled")
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("decay_type", ["coupled", "decoupled"])
def test_adam_and_adamw_follow_algorithm_2(decay_type):
    steps = 30
    c = cfg(optimizer="adam", learning_rate=0.05, weight_decay=0.1, decay_type=decay_type,
            schedule="cosine")
    eta = optim.make_schedule(c, steps, steps)
    ours = run_chain(c, steps)
    ref = paper_adam(np.array([0.5, -1.0, 2.0]), steps, 0.05, 0.1, lambda t: float(eta(t)),
                     decay_type == "decoupled")
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)


def test_decoupled_and_coupled_really_differ():
    c1 = cfg(optimizer="adam", learning_rate=0.05, weight_decay=0.1, decay_type="coupled")
    c2 = cfg(optimizer="adam", learning_rate=0.05, weight_decay=0.1, decay_type="decoupled")
    assert np.max(np.abs(run_chain(c1, 20) - run_chain(c2, 20))) > 1e-3


def test_weight_decay_mask_skips_biases_and_norm_scales():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones((4,))},
              "bn": {"scale": jnp.ones((4,))}}
    c = cfg(optimizer="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.5,
            decay_type="decoupled", schedule="constant")
    tx, _ = optim.make_optimizer(c, params, 10, 10, 256)
    zeros = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zeros, tx.init(params), params)
    assert float(jnp.max(jnp.abs(upd["conv"]["kernel"] + 0.5))) < 1e-7
    assert float(jnp.max(jnp.abs(upd["conv"]["bias"]))) == 0.0
    assert float(jnp.max(jnp.abs(upd["bn"]["scale"]))) == 0.0


def test_agc_and_clipping_are_in_the_chain():
    params = {"fc": {"kernel": jnp.ones((4, 3))}, "conv": {"kernel": jnp.ones((3, 3, 2, 4))}}
    big = jax.tree.map(lambda p: 1e3 * jnp.ones_like(p), params)
    tx, _ = optim.make_optimizer(cfg(optimizer="sgd", learning_rate=1.0, momentum=0.0,
                                     schedule="constant", agc_clip=0.01), params, 10, 10, 256)
    upd, _ = tx.update(big, tx.init(params), params)
    # the conv kernel is clipped unit-wise to 0.01 * ||W_i||; the classifier ('fc') is not
    unit = jnp.sqrt(jnp.sum(upd["conv"]["kernel"] ** 2, axis=(0, 1, 2)))
    w_unit = jnp.sqrt(jnp.sum(params["conv"]["kernel"] ** 2, axis=(0, 1, 2)))
    np.testing.assert_allclose(unit, 0.01 * w_unit, rtol=1e-4)
    np.testing.assert_allclose(upd["fc"]["kernel"], -big["fc"]["kernel"])
    tx, _ = optim.make_optimizer(cfg(optimizer="sgd", learning_rate=1.0, momentum=0.0,
                                     schedule="constant", grad_clip_norm=1.0), params, 10, 10, 256)
    upd, _ = tx.update(big, tx.init(params), params)
    assert float(optax.tree.norm(upd)) == pytest.approx(1.0, rel=1e-5)
