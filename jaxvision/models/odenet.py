"""ODE-Net, RK-Net and the matching ResNet for MNIST (Chen et al., 2018, section 3).

The six residual blocks of a small ResNet are replaced by one continuous block
``dh/dt = f(h, t)``, ``h(1) = h(0) + int_0^1 f(h, t) dt``.  The layout follows the paper's
MNIST code: a downsampling stem (conv 3x3 64, GroupNorm, ReLU, conv 4x4/2 64, GroupNorm,
ReLU, conv 4x4/2 64: 28x28 -> 26 -> 13 -> 6), the feature block, then GroupNorm, ReLU,
global average pooling and a linear classifier.  ``f`` is GroupNorm, ReLU, conv 3x3,
GroupNorm, ReLU, conv 3x3, GroupNorm, where each conv also sees ``t`` as an extra input
channel.  GroupNorm uses ``min(norm_groups, C)`` groups (32 as the paper's code; the tiny
variants keep its two channels per group, since with one channel per group the norm
cancels the preceding conv bias exactly).

Solvers:

* ``'dopri5'``: adaptive Dormand-Prince (``jax.experimental.ode.odeint``, rtol/atol
  1e-3 as the paper's code); gradients by the adjoint method, whose memory does not
  grow with the number of solver steps.  Only ``adjoint=True`` is available.
* ``'rk4'``: classical Runge-Kutta with ``num_steps`` fixed steps, differentiated either
  by backpropagating through the solver (``adjoint=False``: the RK-Net, memory grows
  with the steps) or by the adjoint method (``adjoint=True``).

Parameter counts at 28x28x1 (the paper reports 0.22M for ODE-Net/RK-Net, 0.60M for
the ResNet): ``odenet_mnist``/``rknet_mnist`` 208,266, ``resnet6_mnist`` 576,778.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers import Conv, pad
from jaxvision.layers.conv_impl import loop_body
from jaxvision.layers.head import classifier_head
from jaxvision.registry import register_model

SOLVERS = ("dopri5", "rk4")


# ---------------------------------------------------------------------------------------
# Fixed-step RK4, with backpropagation through the steps or the adjoint method.
# ---------------------------------------------------------------------------------------

def _axpy(a, x, y):
    """``a * x + y`` over matching pytrees."""
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def _rk4_step(f, state, t, dt, params):
    k1 = f(state, t, params)
    k2 = f(_axpy(dt / 2, k1, state), t + dt / 2, params)
    k3 = f(_axpy(dt / 2, k2, state), t + dt / 2, params)
    k4 = f(_axpy(dt, k3, state), t + dt, params)
    incr = jax.tree.map(lambda a, b, c, d: a + 2 * b + 2 * c + d, k1, k2, k3, k4)
    return _axpy(dt / 6, incr, state)


def _rk4_integrate(f, state, params, t0, t1, num_steps):
    dt = (t1 - t0) / num_steps

    def body(carry, i):
        return _rk4_step(f, carry, t0 + i * dt, dt, params), None

    out, _ = jax.lax.scan(body, state, jnp.arange(num_steps, dtype=jnp.float32))
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4, 5))
def _rk4_adjoint(f, h0, params, t0, t1, num_steps):
    return _rk4_integrate(f, h0, params, t0, t1, num_steps)


def _rk4_adjoint_fwd(f, h0, params, t0, t1, num_steps):
    h1 = _rk4_integrate(f, h0, params, t0, t1, num_steps)
    # Only the end state is kept: the trajectory is recomputed backwards in time.
    return h1, (h1, params)


def _rk4_adjoint_bwd(f, t0, t1, num_steps, res, g):
    h1, params = res

    def augmented(state, t, p):
        # d/dt [h, a, g_theta] = [f, -a^T df/dh, -a^T df/dtheta]  (eqs. 4-5).
        h, a, _ = state
        fh, vjp = jax.vjp(lambda h_, p_: f(h_, t, p_), h, p)
        a_h, a_p = vjp(a)
        return fh, jax.tree.map(jnp.negative, a_h), jax.tree.map(jnp.negative, a_p)

    start = (h1, g, jax.tree.map(jnp.zeros_like, params))
    _, a0, g_params = _rk4_integrate(augmented, start, params, t1, t0, num_steps)
    return a0, g_params


_rk4_adjoint.defvjp(_rk4_adjoint_fwd, _rk4_adjoint_bwd)


def odeint_rk4(f: Callable, h0, params, t0: float = 0.0, t1: float = 1.0,
               num_steps: int = 8, adjoint: bool = False):
    """``h(t1)`` for ``dh/dt = f(h, t, params)``, ``h(t0) = h0``, with fixed-step RK4.

    ``adjoint=False`` differentiates through the solver (memory O(num_steps));
    ``adjoint=True`` solves the adjoint ODE backwards with the same steps (memory O(1) in
    the number of steps; the gradient matches backprop up to the discretisation error).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t0, t1 = float(t0), float(t1)
    if adjoint:
        return _rk4_adjoint(f, h0, params, t0, t1, int(num_steps))
    return _rk4_integrate(f, h0, params, t0, t1, int(num_steps))


def odeint_dopri5(f: Callable, h0, params, t0: float = 0.0, t1: float = 1.0,
                  rtol: float = 1e-3, atol: float = 1e-3, mxstep: int = 10_000):
    """``h(t1)`` with adaptive Dormand-Prince; gradients by the adjoint method."""
    # Imported here: the rest of the package (and the fixed-step solvers) must not depend on
    # an experimental module.
    from jax.experimental.ode import odeint as _dopri5_odeint

    ts = jnp.array([t0, t1], jnp.float32)
    return _dopri5_odeint(f, h0, ts, params, rtol=rtol, atol=atol, mxstep=mxstep)[-1]


# ---------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------

def _norm(dim, max_groups, dtype, name):
    return nn.GroupNorm(num_groups=min(max_groups, dim), epsilon=1e-5, dtype=dtype, name=name)


class ConcatConv(nn.Module):
    """3x3 convolution whose input carries the time ``t`` as an extra (first) channel."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, t):
        tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1] + (1,))
        return Conv(self.features, (3, 3), padding=pad(1), dtype=self.dtype,
                    name="conv")(jnp.concatenate([tt, x], axis=-1))


class ODEFunc(nn.Module):
    """``f(h, t)``: GroupNorm, ReLU, t-conv, GroupNorm, ReLU, t-conv, GroupNorm."""

    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, t):
        dim = h.shape[-1]
        out = nn.relu(_norm(dim, self.norm_groups, self.dtype, "norm1")(h))
        out = ConcatConv(dim, self.dtype, name="conv1")(out, t)
        out = nn.relu(_norm(dim, self.norm_groups, self.dtype, "norm2")(out))
        out = ConcatConv(dim, self.dtype, name="conv2")(out, t)
        return _norm(dim, self.norm_groups, self.dtype, "norm3")(out)


class ODESolverSettings(nn.Module):
    """The solver fields an :class:`ODEBlock` and an :class:`ODENet` both take: ``solver``
    ('dopri5' adaptive, or 'rk4' with ``num_steps`` fixed steps), ``adjoint`` (gradients by
    the adjoint method instead of backpropagating through the solver) and the dopri5
    tolerances."""

    solver: str = "dopri5"
    adjoint: bool = True
    num_steps: int = 8
    rtol: float = 1e-3
    atol: float = 1e-3

    def solver_settings(self) -> dict:
        """The fields above, checked, as keyword arguments."""
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown ODE solver {self.solver!r}; choose one of {SOLVERS}")
        if self.solver == "dopri5" and not self.adjoint:
            raise ValueError("solver='dopri5' is differentiated with the adjoint method only; "
                             "use solver='rk4' to backpropagate through the solver")
        return dict(solver=self.solver, adjoint=self.adjoint, num_steps=self.num_steps,
                    rtol=self.rtol, atol=self.atol)


class ODEBlock(ODESolverSettings):
    """``h(1)`` of ``dh/dt = f(h, t)`` from ``h(0) = x``.

    The solver needs ``f`` as a pure function of its parameters, so ``f`` is an unbound
    :class:`ODEFunc` whose variables live under this module's ``func`` parameter and are
    passed explicitly to the solver (the adjoint pass integrates their gradient).
    """

    t1: float = 1.0
    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        self.solver_settings()
        func = ODEFunc(self.norm_groups, dtype=self.dtype, parent=None)
        params = self.param("func",
                            lambda key: func.init(key, x, jnp.zeros((), x.dtype))["params"])

        def f(h, t, p):
            # The solver calls f inside loops: pick conv gradients that are fast there.
            with loop_body():
                return func.apply({"params": p}, h, t)

        if self.solver == "dopri5":
            return odeint_dopri5(f, x, params, 0.0, self.t1, rtol=self.rtol, atol=self.atol)
        return odeint_rk4(f, x, params, 0.0, self.t1, self.num_steps, adjoint=self.adjoint)


class ResBlock(nn.Module):
    """Pre-activation residual block without biases: x + conv(ReLU(GN(conv(ReLU(GN(x))))))."""

    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        out = nn.relu(_norm(dim, self.norm_groups, self.dtype, "norm1")(x))
        out = Conv(dim, (3, 3), padding=pad(1), use_bias=False, dtype=self.dtype,
                   name="conv1")(out)
        out = nn.relu(_norm(dim, self.norm_groups, self.dtype, "norm2")(out))
        out = Conv(dim, (3, 3), padding=pad(1), use_bias=False, dtype=self.dtype,
                   name="conv2")(out)
        return x + out


class ODENet(ODESolverSettings):
    """Downsampling stem, then an ODE block (``block='ode'``) or ``num_res_blocks``
    residual blocks (``block='res'``), then GroupNorm-ReLU-avgpool-FC."""

    num_classes: int = 10
    width: int = 64
    block: str = "ode"
    num_res_blocks: int = 6
    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"ODENet expects NHWC images, got shape {x.shape}")
        w = self.width
        x = Conv(w, (3, 3), padding=pad(0), dtype=self.dtype, name="conv1")(x)
        x = nn.relu(_norm(w, self.norm_groups, self.dtype, "norm1")(x))
        x = Conv(w, (4, 4), strides=(2, 2), padding=pad(1), dtype=self.dtype, name="conv2")(x)
        x = nn.relu(_norm(w, self.norm_groups, self.dtype, "norm2")(x))
        x = Conv(w, (4, 4), strides=(2, 2), padding=pad(1), dtype=self.dtype, name="conv3")(x)
        if self.block == "ode":
            x = ODEBlock(**self.solver_settings(), norm_groups=self.norm_groups,
                         dtype=self.dtype, name="ode_block")(x)
        elif self.block == "res":
            for i in range(self.num_res_blocks):
                x = ResBlock(self.norm_groups, self.dtype, name=f"res_block{i + 1}")(x)
        else:
            raise ValueError(f"ODENet block must be 'ode' or 'res', got {self.block!r}")
        x = nn.relu(_norm(w, self.norm_groups, self.dtype, "head_norm")(x))
        return classifier_head(x, self.num_classes, name="fc", pool=True, dtype=self.dtype)


_MNIST = dict(input_size=(28, 28, 1), num_classes=10, mean=(0.0,), std=(1.0,), crop_pct=1.0)


@register_model(**_MNIST)
def odenet_mnist(**kwargs):
    return ODENet(**dict(dict(block="ode", solver="dopri5", adjoint=True), **kwargs))


@register_model(**_MNIST)
def rknet_mnist(**kwargs):
    return ODENet(**dict(dict(block="ode", solver="rk4", adjoint=False, num_steps=8), **kwargs))


@register_model(**_MNIST)
def resnet6_mnist(**kwargs):
    return ODENet(**dict(dict(block="res", num_res_blocks=6), **kwargs))


@register_model(**_MNIST)
def test_odenet(**kwargs):
    return ODENet(**dict(dict(width=8, norm_groups=4, block="ode", solver="dopri5", adjoint=True),
                         **kwargs))


@register_model(**_MNIST)
def test_resnet6(**kwargs):
    return ODENet(**dict(dict(width=8, norm_groups=4, block="res", num_res_blocks=6), **kwargs))
