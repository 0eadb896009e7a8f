"""Pooling with torch / Caffe semantics (ceil mode, count_include_pad, adaptive pooling).

The classic ConvNets were defined in Caffe, whose pooling rounds output sizes up; torch
reproduces that with ``ceil_mode=True``.  These helpers give the same window placement and
divisors on NHWC arrays, so converted torch weights produce the same logits.
"""
from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.layers.conv import tuple2


def _out_size(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    if ceil_mode:
        o = -(-(n + 2 * p - k) // s) + 1
        # torch: the last window must start inside the input or the left padding.
        if (o - 1) * s >= n + p:
            o -= 1
    else:
        o = (n + 2 * p - k) // s + 1
    if o < 1:
        raise ValueError(f"pooling window {k} (stride {s}, padding {p}) does not fit an input "
                         f"of size {n}; use a larger input")
    return o


def _pads(shape, k, s, p, ceil_mode):
    pads, outs = [], []
    for n, kk, ss, pp in zip(shape, k, s, p):
        o = _out_size(n, kk, ss, pp, ceil_mode)
        pads.append((pp, max((o - 1) * ss + kk - n - pp, 0)))
        outs.append(o)
    return pads, outs


def max_pool(x, window=3, stride=2, padding=0, ceil_mode: bool = False):
    """torch ``MaxPool2d(window, stride, padding, ceil_mode)`` on (B, H, W, C).

    The gradient goes to the first maximum of each window in row-major order, as torch's and
    XLA's own (``select_and_scatter``) do, but is computed tap by tap (:func:`_max_pool`):
    on XLA:CPU ``select_and_scatter`` costs ~20x the forward pass (449 ms against 22 ms for a
    3x3/2 pool of a (32, 112, 112, 64) map).
    """
    k, s, p = tuple2(window), tuple2(stride), tuple2(padding)
    pads, _ = _pads(x.shape[1:3], k, s, p, ceil_mode)
    return _max_pool(x, k, s, tuple(pads), tuple(x.shape[1:3]))


def xla_max_pool(x, window=3, stride=2, padding=0, ceil_mode: bool = False):
    """The same pooling as :func:`max_pool` by XLA's own ``reduce_window``, whose gradient
    is XLA's ``select_and_scatter``: the reference :func:`max_pool`'s gradient is held to."""
    k, s, p = tuple2(window), tuple2(stride), tuple2(padding)
    pads, _ = _pads(x.shape[1:3], k, s, p, ceil_mode)
    return _reduce_max(x, k, s, tuple(pads))


def _reduce_max(x, k, s, pads):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *k, 1), (1, *s, 1),
                                 ((0, 0), *pads, (0, 0)))


def _tap_slices(xp, k, s, out_hw):
    """The k[0]*k[1] strided views of the padded input, one per window position, row-major."""
    b, _, _, c = xp.shape
    oh, ow = out_hw
    span_h, span_w = (oh - 1) * s[0] + 1, (ow - 1) * s[1] + 1
    return [jax.lax.slice(xp, (0, i, j, 0), (b, i + span_h, j + span_w, c), (1, s[0], s[1], 1))
            for i in range(k[0]) for j in range(k[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x, k, s, pads, hw):
    return _reduce_max(x, k, s, pads)


def _max_pool_fwd(x, k, s, pads, hw):
    # The window's first maximum is located here, from the very values whose maximum is
    # taken, and kept as an index: comparing the backward pass's copy of ``x`` with ``y``
    # instead is fragile, because XLA may recompute ``x`` (e.g. a fused BatchNorm + ReLU)
    # in another fusion whose rounding differs, and then no tap equals the maximum.
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    out_hw = tuple((xp.shape[1 + d] - k[d]) // s[d] + 1 for d in range(2))
    taps = _tap_slices(xp, k, s, out_hw)
    y, best, idx = taps[0], taps[0], jnp.zeros(taps[0].shape, jnp.int32)
    for t, tap in enumerate(taps[1:], start=1):
        y = jnp.maximum(y, tap)  # propagates NaN like reduce_window
        better = tap > best      # strict: ties keep the first (row-major) maximum
        best = jnp.where(better, tap, best)
        idx = jnp.where(better, t, idx)
    small = jnp.int8 if len(taps) <= 127 else jnp.int32
    return y, idx.astype(small)


def _max_pool_bwd(k, s, pads, hw, idx, g):
    b, oh, ow, c = g.shape
    hp = hw[0] + pads[0][0] + pads[0][1]
    wp = hw[1] + pads[1][0] + pads[1][1]
    dxp = jnp.zeros((b, hp, wp, c), g.dtype)
    zero = jnp.zeros((), g.dtype)
    span_h, span_w = (oh - 1) * s[0] + 1, (ow - 1) * s[1] + 1
    # Taps in _tap_slices' row-major order; each one's transpose (interior padding) puts
    # the gradient of the windows whose maximum it holds back in place.
    for t, (i, j) in enumerate(itertools.product(range(k[0]), range(k[1]))):
        dxp = dxp + jax.lax.pad(jnp.where(idx == t, g, zero), zero, (
            (0, 0, 0), (i, hp - i - span_h, s[0] - 1), (j, wp - j - span_w, s[1] - 1),
            (0, 0, 0)))
    (pt, _), (pl, _) = pads
    return (dxp[:, pt:pt + hw[0], pl:pl + hw[1]],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x, window=3, stride=1, padding=0, ceil_mode: bool = False,
             count_include_pad: bool = True):
    """torch ``AvgPool2d(window, stride, padding, ceil_mode, count_include_pad)`` on NHWC."""
    k, s, p = tuple2(window), tuple2(stride), tuple2(padding)
    h, w = x.shape[1:3]
    pads, _ = _pads((h, w), k, s, p, ceil_mode)
    win_pad = ((0, 0), *pads, (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *k, 1), (1, *s, 1), win_pad)
    # Divisor per output position, computed in numpy at trace time (shapes are static).
    if count_include_pad:
        # Elements inside the explicitly padded frame count; the ceil-mode overhang does not.
        ones = np.pad(np.ones((h, w)), ((p[0], p[0]), (p[1], p[1])), constant_values=1.0)
        extra = [(0, pads[0][1] - p[0]), (0, pads[1][1] - p[1])]
        ones = np.pad(ones, [(0, max(e, 0)) for _, e in extra])
    else:
        ones = np.pad(np.ones((h, w)), pads)
    cnt = _np_window_sum(ones, k, s, total.shape[1:3])
    return total / jnp.asarray(cnt[None, :, :, None], x.dtype)


def _np_window_sum(a, k, s, out_hw):
    oh, ow = out_hw
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = a[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum()
    return out


def _adaptive_matrix(n: int, o: int) -> np.ndarray:
    # torch's adaptive windows: [floor(i n / o), ceil((i + 1) n / o)).
    m = np.zeros((o, n), np.float32)
    for i in range(o):
        a, b = (i * n) // o, math.ceil((i + 1) * n / o)
        m[i, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool(x, output_size):
    """torch ``AdaptiveAvgPool2d(output_size)`` on (B, H, W, C); also upsamples small maps
    (each output cell averages the input cells its window covers)."""
    oh, ow = tuple2(output_size)
    h, w = x.shape[1:3]
    if (h, w) == (oh, ow):
        return x
    mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
    return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, x)


def global_avg_pool(x):
    """(B, H, W, C) -> (B, C)."""
    return jnp.mean(x, axis=(1, 2))


__all__ = ["adaptive_avg_pool", "avg_pool", "global_avg_pool", "max_pool", "xla_max_pool"]
