"""Convolution as matrix products, for backends whose native convolution has slow paths.

XLA:CPU lowers ``lax.conv_general_dilated`` to a convolution kernel that is competitive on
large feature maps but falls off a cliff on some shapes (measured in ``_choose_plan``'s
docstring): small spatial maps with many channels (a 3x3 conv on 2x2x512 runs ~50x slower
than the same arithmetic as a matrix product), and the input gradient of strided convs on
small maps.  A convolution is a sum over kernel taps of matrix products, so every such shape
can instead be computed by the backend's matrix multiply, which has no such cliff:

* ``im2col``: gather the ``KH*KW`` shifted (strided, dilated) views of the padded input into a
  patch matrix ``(N*Ho*Wo, KH*KW*C)`` and multiply once by the kernel ``(KH*KW*C, O)``
  (Chellapilla et al., 2006, "High performance convolutional neural networks for document
  processing").  One large GEMM; costs a ``KH*KW``-times copy of the input.
* ``shift``: the same sum done tap by tap, ``sum_t x_t @ w_t``, with no patch matrix; better
  when the copy costs more than the smaller GEMMs lose (moderate maps with >=64 channels).

Both directions of the backward pass are matrix products too, and a ``jax.custom_vjp`` lets
each of forward, input-gradient (``dgrad``) and kernel-gradient (``wgrad``) use its own
formulation (``lax``, ``im2col`` or ``shift``), chosen per shape at trace time:

* ``wgrad`` of ``im2col`` is ``P^T @ g`` (contracting over ``N*Ho*Wo``), of ``shift`` one such
  product per tap; patches are recomputed from the saved input rather than stored.
* ``dgrad`` is ``g @ W^T`` scattered back onto the input ("col2im"); the scatter is the
  transpose of the (linear) patch extraction, obtained with ``jax.linear_transpose``, which
  XLA emits as interior-padded adds (strides) and pads (offsets).
* ``lax`` in either backward direction uses JAX's own transpose of the native convolution.

Only NHWC/HWIO-style 2-D (and 1-D, as 2-D with height 1) convolutions without
``lhs_dilation`` or ``batch_group_count`` are rewritten; everything else goes to ``lax``.
Which formulation runs is decided by :func:`conv_plan` from static shapes, the backend and the
``JAXVISION_CONV_IMPL`` environment variable (``auto`` (default), ``lax``, ``matmul``), read at
trace time.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IMPLS = ("auto", "lax", "matmul")
_FORMS = ("lax", "im2col", "shift")
ENV_VAR = "JAXVISION_CONV_IMPL"


class Plan(NamedTuple):
    """Formulation of each pass: one of ``'lax'``, ``'im2col'``, ``'shift'``."""

    fwd: str
    dgrad: str
    wgrad: str


class _Geometry(NamedTuple):
    """Static description of one NHWC/HWIO convolution (all ints / tuples of ints)."""

    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    o: int
    ho: int
    wo: int
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int


def requested_impl() -> str:
    """The implementation asked for by ``JAXVISION_CONV_IMPL`` (read now, at trace time)."""
    impl = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if impl not in IMPLS:
        raise ValueError(f"{ENV_VAR}={impl!r} is not one of {', '.join(IMPLS)}")
    return impl


def _platform(x) -> str:
    """Platform the convolution will run on: the input's devices where known (a concrete,
    committed array), otherwise the default backend (inside ``jit`` the input is a tracer)."""
    try:
        return next(iter(x.devices())).platform
    except Exception:  # noqa: BLE001 - tracers, numpy arrays: fall back to the default.
        pass
    return jax.default_backend()


# ----------------------------------------------------------------------------------------
# Plan choice.
# ----------------------------------------------------------------------------------------

def _choose_plan_cpu(g: _Geometry) -> Plan:
    """Per-pass formulation on XLA:CPU, from measurements on an AMD EPYC (AVX-512, 2 cores),
    jax 0.10.2, batch 32, float32; ms as forward / input-grad / kernel-grad:

    ==============================  ====================  ===================  ==================
    conv (input -> output)           lax                   im2col               shift
    ==============================  ====================  ===================  ==================
    3x3 64->64, 16x16               6.7 / 6.6 / 16.3      16.0 / 9.7 / 28.3    5.5 / 5.2 / 21.4
    3x3 512->512, 2x2               315 / 297 / 5.2       4.4 / 7.6 / 7.8      10.7 / 7.2 / 18.0
    3x3/2 256->512, 4x4             4.4 / 156 / 4.5       4.3 / 4.2 / 4.0      5.2 / 5.1 / 5.1
    7x7/2 3->64, 64x64              8.5 / 19.1 / 11.7     29.8 / 21.2 / 44.9   186 / 32 / 134
    3x3 128->128, 8x8               3.5 / 3.6 / 4.5       4.7 / 7.1 / 9.8      7.6 / 4.3 / 9.4
    3x3 64->64, 32x32               27.9 / 28.3 / 30.7    78.9 / 56.4 / 98.3   53.7 / 42.7 / 86.5
    ==============================  ====================  ===================  ==================

    The native kernel is the one to keep except where its cliff lies: outputs of very few
    positions per image with many channels.  There ``im2col`` costs almost nothing extra
    (the patch matrix is small) and wins by up to 70x; the same holds for the input gradient
    of strided convs whose gradient map is tiny.  See ``_TABLE`` for the rule in numbers.
    """
    taps = g.kh * g.kw
    if g.groups != 1 or taps == 1:
        # Grouped/depthwise: the batched-matmul form is not a win on CPU.  1x1: lax already
        # emits a plain GEMM and is fast in all three passes.
        return Plan("lax", "lax", "lax")
    out_pos = g.ho * g.wo
    in_pos = g.h * g.w
    fwd = "im2col" if out_pos <= _TABLE["fwd_max_out_positions"] and g.c >= 64 else "lax"
    # The input-gradient is a (transposed) conv producing the input map from the gradient
    # map: its cliff follows the small gradient map, made worse by strides.
    small_grad = out_pos <= _TABLE["dgrad_max_out_positions"]
    strided_small = (max(g.strides) > 1 and in_pos <= _TABLE["dgrad_strided_max_in_positions"])
    dgrad = "im2col" if (small_grad or strided_small) and g.c >= 64 else "lax"
    wgrad = "lax"
    return Plan(fwd, dgrad, wgrad)


# Thresholds of the CPU rule (positions = spatial size per image).
_TABLE = {
    "fwd_max_out_positions": 4,
    "dgrad_max_out_positions": 4,
    "dgrad_strided_max_in_positions": 64,
}


def conv_plan(g: _Geometry, impl: str, platform: str) -> Plan:
    if impl == "lax":
        return Plan("lax", "lax", "lax")
    if impl == "matmul":
        form = "shift" if g.kh * g.kw == 1 else "im2col"
        return Plan(form, form, form)
    if platform != "cpu":
        # cuDNN / TPU convolutions have no such cliffs; keep the native op.
        return Plan("lax", "lax", "lax")
    return _choose_plan_cpu(g)


# ----------------------------------------------------------------------------------------
# Formulations on NHWC input / HWIO kernel.
# ----------------------------------------------------------------------------------------

def _taps(x, g: _Geometry):
    """The KH*KW shifted views of the padded input, each (N, Ho, Wo, C), tap-major (i, j)."""
    (pt, pb), (pl, pr) = g.pads
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    sh, sw = g.strides
    dh, dw = g.dilation
    out = []
    for i in range(g.kh):
        for j in range(g.kw):
            start = (0, i * dh, j * dw, 0)
            limit = (g.n, i * dh + sh * (g.ho - 1) + 1, j * dw + sw * (g.wo - 1) + 1, g.c)
            out.append(lax.slice(x, start, limit, (1, sh, sw, 1)))
    return out


def _patches(x, g: _Geometry):
    """im2col patch matrix (N*Ho*Wo, KH*KW, C)."""
    taps = _taps(x, g)
    p = taps[0][..., None, :] if len(taps) == 1 else jnp.stack(taps, axis=3)
    return p.reshape(g.n * g.ho * g.wo, g.kh * g.kw, g.c)


def _mm(a, b, contract, batch=((), ()), precision=None, preferred=None):
    return lax.dot_general(a, b, (contract, batch), precision=precision,
                           preferred_element_type=preferred)


def _fwd_matmul(x, w, g: _Geometry, form: str, precision, preferred):
    """Forward conv as im2col (one GEMM) or shift (one GEMM per tap). Returns NHWC."""
    m = g.n * g.ho * g.wo
    gr, cg, og = g.groups, g.c // g.groups, g.o // g.groups
    taps = g.kh * g.kw
    wk = w.reshape(taps, cg, gr, og)
    if form == "im2col":
        p = _patches(x, g).reshape(m, taps, gr, cg)
        if gr == 1:
            y = _mm(p.reshape(m, taps * cg), wk.reshape(taps * cg, og), ((1,), (0,)),
                    precision=precision, preferred=preferred)
        else:
            # (G, M, Og): batch over groups, contract taps and group channels.
            y = _mm(p, wk, ((1, 3), (0, 1)), ((2,), (2,)), precision, preferred)
            y = jnp.transpose(y, (1, 0, 2)).reshape(m, g.o)
    else:
        y = None
        for t, xt in enumerate(_taps(x, g)):
            xt = xt.reshape(m, gr, cg)
            if gr == 1:
                yt = _mm(xt.reshape(m, cg), wk[t, :, 0], ((1,), (0,)),
                         precision=precision, preferred=preferred)
            else:
                yt = _mm(xt, wk[t], ((2,), (0,)), ((1,), (1,)), precision, preferred)
                yt = jnp.transpose(yt, (1, 0, 2)).reshape(m, g.o)
            y = yt if y is None else y + yt
    return y.reshape(g.n, g.ho, g.wo, g.o)


def _dgrad_matmul(ct, x_aval, w, g: _Geometry, form: str, precision):
    """Input gradient: ``ct @ W^T`` per tap, scattered back by transposing the patch gather."""
    m = g.n * g.ho * g.wo
    gr, cg, og = g.groups, g.c // g.groups, g.o // g.groups
    taps = g.kh * g.kw
    wk = w.reshape(taps, cg, gr, og)
    c3 = ct.reshape(m, gr, og)
    dt = x_aval.dtype
    if form == "im2col":
        if gr == 1:
            dp = _mm(c3.reshape(m, og), wk.reshape(taps * cg, og), ((1,), (1,)),
                     precision=precision, preferred=dt)
        else:
            dp = _mm(c3, wk, ((2,), (3,)), ((1,), (2,)), precision, dt)  # (G, M, T, Cg)
            dp = jnp.transpose(dp, (1, 2, 0, 3))
        dp = dp.reshape(m, taps, g.c)
        (dx,) = jax.linear_transpose(lambda v: _patches(v, g), x_aval)(dp.astype(dt))
        return dx
    dts = []
    for t in range(taps):
        if gr == 1:
            d = _mm(c3.reshape(m, og), wk[t, :, 0], ((1,), (1,)), precision=precision,
                    preferred=dt)
        else:
            d = _mm(c3, wk[t], ((2,), (2,)), ((1,), (1,)), precision, dt)  # (G, M, Cg)
            d = jnp.transpose(d, (1, 0, 2))
        dts.append(d.reshape(g.n, g.ho, g.wo, g.c).astype(dt))
    (dx,) = jax.linear_transpose(lambda v: _taps(v, g), x_aval)(dts)
    return dx


def _wgrad_matmul(ct, x, g: _Geometry, form: str, precision, w_dtype):
    """Kernel gradient: ``P^T @ ct`` contracting over all output positions. Returns HWIO."""
    m = g.n * g.ho * g.wo
    gr, cg, og = g.groups, g.c // g.groups, g.o // g.groups
    taps = g.kh * g.kw
    c3 = ct.reshape(m, gr, og)
    if form == "im2col":
        p = _patches(x, g).reshape(m, taps, gr, cg)
        if gr == 1:
            dw = _mm(p.reshape(m, taps * cg), c3.reshape(m, og), ((0,), (0,)),
                     precision=precision, preferred=w_dtype)
        else:
            dw = _mm(p, c3, ((0,), (0,)), ((2,), (1,)), precision, w_dtype)  # (G, T, Cg, Og)
            dw = jnp.transpose(dw, (1, 2, 0, 3))
    else:
        parts = []
        for xt in _taps(x, g):
            xt = xt.reshape(m, gr, cg)
            if gr == 1:
                d = _mm(xt.reshape(m, cg), c3.reshape(m, og), ((0,), (0,)),
                        precision=precision, preferred=w_dtype)
            else:
                d = jnp.transpose(_mm(xt, c3, ((0,), (0,)), ((1,), (1,)), precision, w_dtype),
                                  (1, 0, 2))  # (Cg, G, Og)
            parts.append(d)
        dw = jnp.stack(parts, axis=0)
    return dw.reshape(g.kh, g.kw, cg, g.o).astype(w_dtype)


def _lax_nhwc(x, w, g: _Geometry, precision, preferred):
    return lax.conv_general_dilated(
        x, w, g.strides, g.pads, rhs_dilation=g.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g.groups,
        precision=precision, preferred_element_type=preferred)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_nhwc(x, w, g: _Geometry, plan: Plan, precision, preferred):
    if plan.fwd == "lax":
        return _lax_nhwc(x, w, g, precision, preferred)
    return _fwd_matmul(x, w, g, plan.fwd, precision, preferred)


def _conv_nhwc_fwd(x, w, g, plan, precision, preferred):
    return _conv_nhwc(x, w, g, plan, precision, preferred), (x, w)


def _conv_nhwc_bwd(g, plan, precision, preferred, res, ct):
    x, w = res
    # The cotangent has the output dtype (``preferred`` may be wider than the inputs);
    # products are taken in the input dtype and accumulated as the backend does for it.
    ct = ct.astype(x.dtype)
    if plan.dgrad == "lax" or plan.wgrad == "lax":
        _, lax_vjp = jax.vjp(lambda a, b: _lax_nhwc(a, b, g, precision, None), x, w)
        lax_dx, lax_dw = lax_vjp(ct)  # XLA drops whichever of the two is unused.
    x_aval = jax.ShapeDtypeStruct(x.shape, x.dtype)
    dx = lax_dx if plan.dgrad == "lax" else _dgrad_matmul(ct, x_aval, w, g, plan.dgrad,
                                                          precision)
    dw = lax_dw if plan.wgrad == "lax" else _wgrad_matmul(ct, x, g, plan.wgrad, precision,
                                                          w.dtype)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


# ----------------------------------------------------------------------------------------
# Entry point with the signature of lax.conv_general_dilated.
# ----------------------------------------------------------------------------------------

def _is_ones(v) -> bool:
    return v is None or all(int(d) == 1 for d in v)


def _pairs(padding, in_spatial, kernel_spatial, strides, dilation):
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip(kernel_spatial, dilation)]
        return tuple(tuple(int(v) for v in p)
                     for p in lax.padtype_to_pads(in_spatial, eff, strides, padding))
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    if len(pads) != len(in_spatial) or any(len(p) != 2 for p in pads):
        raise ValueError(f"padding must be 'SAME', 'VALID' or {len(in_spatial)} (low, high) "
                         f"pairs, got {padding!r}")
    return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         *, impl: str | None = None):
    """``lax.conv_general_dilated`` computed by the formulation :func:`conv_plan` picks.

    ``impl`` overrides ``JAXVISION_CONV_IMPL`` (``'auto'``, ``'lax'``, ``'matmul'``).
    Calls the matmul forms cannot express (``lhs_dilation``, ``batch_group_count``, 3-D,
    mixed or integer dtypes) always use ``lax``.
    """
    impl = requested_impl() if impl is None else impl
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {', '.join(IMPLS)}")

    def native():
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)

    nd = np.ndim(lhs)
    if (impl == "lax" or nd not in (3, 4) or np.ndim(rhs) != nd or batch_group_count != 1
            or not _is_ones(lhs_dilation)
            or jnp.dtype(lhs.dtype) != jnp.dtype(rhs.dtype)
            or not jnp.issubdtype(lhs.dtype, jnp.floating)):
        return native()
    spatial = nd - 2
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    strides = tuple(int(s) for s in window_strides)
    dilation = (1,) * spatial if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    # To NHWC / HWIO (a no-op transpose for Flax's layout, which XLA removes).
    x = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    w = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    pads = _pairs(padding, x.shape[1:-1], w.shape[:-2], strides, dilation)
    if spatial == 1:  # 1-D as 2-D with a height of one.
        x, w = x[:, None], w[None]
        strides, dilation, pads = (1, *strides), (1, *dilation), ((0, 0), *pads)
    n, h, wd, c = x.shape
    kh, kw, cg, o = w.shape
    groups = int(feature_group_count)
    if groups < 1 or c != cg * groups or o % groups:
        return native()  # let lax raise its own shape error.
    ho = (h + pads[0][0] + pads[0][1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    wo = (wd + pads[1][0] + pads[1][1] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    if min(n, ho, wo, c, o) <= 0:
        return native()
    geom = _Geometry(n, h, wd, c, kh, kw, o, ho, wo, strides, pads, dilation, groups)
    plan = conv_plan(geom, impl, _platform(lhs))
    if plan == Plan("lax", "lax", "lax"):
        return native()
    pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
    y = _conv_nhwc(x, w, geom, plan, precision, pet)
    if spatial == 1:
        y = y[:, 0]
    # NHWC -> the requested output layout.
    nhwc_of = (0, nd - 1, *range(1, nd - 1))  # position in y of (N, C, spatial...)
    perm = [0] * nd
    for k, dim in enumerate(dn.out_spec):
        perm[dim] = nhwc_of[k]
    return jnp.transpose(y, perm)


__all__ = ["IMPLS", "ENV_VAR", "Plan", "conv_general_dilated", "conv_plan", "requested_impl"]
