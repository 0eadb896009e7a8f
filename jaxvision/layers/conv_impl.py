"""Convolution as matrix products, for backends whose native convolution has slow paths.

XLA:CPU lowers ``lax.conv_general_dilated`` to a convolution kernel that is competitive on
large feature maps but falls off a cliff on some shapes (measured in
docs/design/cpu_convolutions.md): small spatial maps with many channels (a 3x3 conv on
2x2x512 runs ~70x slower than the same arithmetic as a matrix product), and the input
gradient of strided convs on small maps.  A convolution is a sum over kernel taps of matrix
products, so every such shape can instead be computed by the backend's matrix multiply, which
has no such cliff (the formulations: :mod:`jaxvision.backends.cpu.formulations`):

* ``im2col``: gather the ``KH*KW`` shifted (strided, dilated) views of the padded input into a
  patch matrix ``(N*Ho*Wo, KH*KW*C)`` and multiply once by the kernel ``(KH*KW*C, O)``
  (Chellapilla et al., 2006, "High performance convolutional neural networks for document
  processing").  One large GEMM; costs a ``KH*KW``-times copy of the input.
* ``shift``: the same sum done tap by tap, ``sum_t x_t @ w_t``, with no patch matrix (for a
  1x1 conv, a single GEMM on the strided input).

* ``winograd2`` / ``winograd4``: Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray,
  2016, "Fast Algorithms for Convolutional Neural Networks"), for 3x3 stride-1 convs only:
  each (m+2)x(m+2) input tile is transformed (``B^T d B``), multiplied channel-wise by the
  transformed kernel (``G w G^T``) as (m+2)^2 GEMMs (tiles, C) @ (C, O), and transformed
  back (``A^T M A``) into an m x m output tile.  F(4x4, 3x3) does 36 products per 16
  outputs instead of 144 (4x fewer multiply-adds; F(2x2, 3x3) 2.25x), at the price of
  transforms that are memory-bound and, for F(4x4), about ten times the float32 rounding
  error of a direct convolution.  Its input gradient is again a Winograd conv (of the
  output gradient with the flipped kernel) and its kernel gradient is (m+2)^2 GEMMs that
  contract over the tiles, ``(B^T d B)^T (A g A^T)``, followed by ``G^T . G``.

* ``onednn``: not a rewrite but a library call: oneDNN's own convolution primitives
  (forward, backward-data, backward-weights), which PyTorch runs on CPUs too, called from the
  compiled program as XLA foreign functions (:mod:`jaxvision.layers.onednn`); float32 and
  ungrouped only.

Both directions of the backward pass are matrix products too.  A ``jax.custom_jvp`` writes
the derivative ``conv(dx, w) + conv(x, dw)`` with one formulation per term, so that forward,
input-gradient (``dgrad``) and kernel-gradient (``wgrad``) each use their own (``lax``,
``im2col`` or ``shift``), chosen per shape at trace time; reverse mode transposes the terms:

* ``wgrad`` of ``im2col`` is ``P^T @ g`` (contracting over ``N*Ho*Wo``), of ``shift`` one such
  product per tap; the patches are rematerialised from the saved input, not stored.
* ``dgrad`` is ``g @ W^T`` scattered back onto the input ("col2im"): the transpose of the
  (linear) patch gather, which XLA emits as interior-padded adds (strides) and pads.
* ``lax`` in either direction is JAX's own transpose of the native convolution.

Only NHWC/HWIO-style 2-D (and 1-D, as 2-D with height 1) convolutions without
``lhs_dilation`` or ``batch_group_count`` are rewritten; everything else goes to ``lax``.
A Winograd pass asked for where it does not apply (not 3x3 stride-1 undilated ungrouped,
padding outside [0, 2], or a dtype below float32) runs ``lax`` instead.
Which formulation runs is decided by :func:`conv_plan` from static shapes, the backend and the
kernels setting (``auto`` (default), ``onednn``, ``xla``, ``lax``, ``matmul``;
:mod:`jaxvision.kernels`), read at trace time; ``python -m jaxvision.explain`` prints it.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvision import kernels
from jaxvision.backends.cpu.formulations import (WINOGRAD, WINOGRAD_DTYPES, Geometry, depthwise,
                                                 depthwise_by_image, fwd_matmul, wino_dgrad,
                                                 wino_fwd, wino_wgrad, winograd_applies)
from jaxvision.backends.cpu.platform import (LIBRARIES, LIBRARY_ENV_VAR, ONEDNN_MIN_JAXLIB,
                                             ONEDNN_XLA_FLAGS, configure_cpu_convolutions,
                                             cpu_conv_library, cpu_vendor, cpuinfo_field,
                                             jaxlib_version)
from jaxvision.layers import onednn

# Defined in jaxvision.backends.cpu and used or re-exported here: the convolution's geometry
# and formulations, and the CPU's description and convolution library.
__all__ = ["ENV_VAR", "FORMS", "IMPLS", "LIBRARIES", "LIBRARY_ENV_VAR", "ONEDNN_MIN_JAXLIB",
           "ONEDNN_XLA_FLAGS", "THRESHOLDS", "Geometry", "Plan", "choose_plan_cpu",
           "configure_cpu_convolutions", "conv_general_dilated", "conv_plan",
           "cpu_conv_library", "cpu_vendor", "cpuinfo_field", "depthwise", "jaxlib_version",
           "loop_body", "multiply_adds", "onednn_applies", "onednn_eligible", "recording",
           "requested_impl", "winograd_applies"]

IMPLS = kernels.CONV_IMPLS  # the settings are defined once, in jaxvision.kernels
FORMS = ("lax", "im2col", "shift", "winograd2", "winograd4", "onednn")
ENV_VAR = kernels.CONV_ENV_VAR


class Plan(NamedTuple):
    """Formulation of each pass: one of ``'lax'``, ``'im2col'``, ``'shift'``,
    ``'winograd2'``, ``'winograd4'``, ``'onednn'``."""

    fwd: str
    dgrad: str
    wgrad: str




try:
    _Tracer = jax.core.Tracer
except AttributeError:  # moved out of the public jax.core in some releases
    from jax._src.core import Tracer as _Tracer


def requested_impl() -> str:
    """The implementation asked for now, at trace time: ``jaxvision.kernels.use``'s or a
    run's ``config.kernels.conv``, else ``JAXVISION_CONV_IMPL``, else ``'auto'``."""
    return kernels.conv()


def _platform(x) -> str:
    """Platform the convolution will run on: the input's devices where known (a concrete,
    committed array), otherwise the default backend (inside ``jit`` the input is a tracer)."""
    if isinstance(x, _Tracer):
        # Asking a tracer for its devices raises an error whose message renders the whole
        # traced program: quadratic tracing time in the depth of the network.
        return jax.default_backend()
    if not hasattr(x, "devices"):
        return jax.default_backend()
    try:
        return next(iter(x.devices())).platform
    except Exception:  # noqa: BLE001 - tracers, numpy arrays: fall back to the default.
        pass
    return jax.default_backend()


# ----------------------------------------------------------------------------------------
# Plan choice.
# ----------------------------------------------------------------------------------------



def choose_plan_cpu(g: Geometry, library: str = "ynnpack") -> Plan:
    """Per-pass formulation on XLA:CPU over XLA's own operations: the native kernel except
    where it is slow (few output positions with many channels, the input gradient of
    strided convs on small maps, strided 1x1 kernel gradients, depthwise convs, gradients
    inside loop bodies), Winograd for 3x3 stride-1 convs where its fewer multiplies pay
    (it costs compile time: only above ``winograd_min_macs``), and per-library variants
    for ``library='onednn'`` (XLA's Eigen kernel with oneDNN's sgemm).  The thresholds are
    in ``THRESHOLDS``; the measurements that set each one, with their commands, are in
    docs/design/cpu_convolutions.md.
    """
    taps = g.kh * g.kw
    if depthwise(g):
        return Plan("shift", "shift", "shift")
    if g.groups != 1:
        return Plan("lax", "lax", "lax")
    if taps == 1:
        return Plan("shift", "shift", "shift")
    out_pos = g.ho * g.wo
    in_pos = g.h * g.w
    wide = g.c >= THRESHOLDS["min_channels"]
    fwd = "im2col" if out_pos <= THRESHOLDS["fwd_max_out_positions"] and wide else "lax"
    strided = max(g.strides) > 1
    narrow = strided and min(g.ho, g.wo) < max(g.kh, g.kw)
    if fwd == "lax" and narrow and g.c >= THRESHOLDS["narrow_fwd_min_channels"]:
        fwd = "shift"
    # The input-gradient maps the output-sized gradient back onto the input: its cliff
    # follows the small gradient map, made worse by strides.
    small_grad = out_pos <= THRESHOLDS["dgrad_max_out_positions"]
    # ... and so does a strided conv whose output map is narrower than its kernel (CapsNet's
    # 9x9/2 primary capsules on 20x20 maps: 12.2 s native against 0.27 s as im2col).
    strided_small = narrow or (strided and in_pos <= THRESHOLDS["dgrad_strided_max_in_positions"])
    dgrad = "im2col" if (small_grad or strided_small) and wide else "lax"
    wgrad = "lax"
    macs = multiply_adds(g)
    onednn = library == "onednn"
    # Under oneDNN the large convs have a rule of their own (below).
    onednn_large = onednn and macs >= THRESHOLDS["onednn_winograd_min_macs"]
    if max(g.strides) > 1 and taps == 9 and wide:
        if macs >= THRESHOLDS["strided_wgrad_shift_min_macs"]:
            wgrad = "shift"
        if onednn and not onednn_large and macs >= THRESHOLDS["onednn_strided_shift_min_macs"]:
            wgrad = "shift"
            dgrad = "shift" if dgrad == "lax" else dgrad
    if (g.c <= THRESHOLDS["stem_max_channels"] and taps >= THRESHOLDS["stem_min_taps"]
            and max(g.strides) > 1 and cpu_vendor() == "intel" and not onednn):
        wgrad = "im2col"
    side = min(g.ho, g.wo)
    # Under oneDNN the large convs skip this rule: with few channels they keep even their
    # native kernel gradient.
    if (winograd_applies(g) and side >= THRESHOLDS["winograd_min_side"]
            and macs >= THRESHOLDS["winograd_min_macs"] and not onednn_large):
        wgrad = "winograd4"
        if (THRESHOLDS["winograd_min_channels"] <= min(g.c, g.o)
                and max(g.c, g.o) <= THRESHOLDS["winograd_max_channels"] and not onednn):
            fwd = "winograd4" if fwd == "lax" else fwd
            dgrad = "winograd4" if dgrad == "lax" else dgrad
    if (onednn_large and winograd_applies(g) and side >= THRESHOLDS["onednn_winograd_min_side"]
            and min(g.c, g.o) >= THRESHOLDS["onednn_winograd_min_channels"]):
        # F(4x4) where its 4x4 output tiles fit the map exactly, F(2x2) elsewhere.
        form = "winograd4" if g.ho % 4 == 0 and g.wo % 4 == 0 else "winograd2"
        wgrad = "winograd4"
        fwd = form if fwd == "lax" else fwd
        if side >= THRESHOLDS["winograd_min_side"]:
            dgrad = form if dgrad == "lax" else dgrad
    elif (onednn and not onednn_large and winograd_applies(g)
          and min(g.c, g.o) >= THRESHOLDS["min_channels"] and macs >= THRESHOLDS["winograd_min_macs"]
          and THRESHOLDS["onednn_small_winograd_min_side"] <= side < THRESHOLDS["winograd_min_side"]):
        # Small maps (ResNet-18's 8x8 and 4x4 at 64x64 input): F(4x4) on maps of 8x8 and up
        # whose tiles fit them, F(2x2) below, for the forward pass of convs with 128
        # channels and more, F(4x4) / F(2x2) kernel gradients from 7x7 / 4x4; the input
        # gradient stays native.
        if min(g.c, g.o) >= THRESHOLDS["onednn_winograd_min_channels"] and fwd == "lax":
            fwd = ("winograd4" if side >= 8 and g.ho % 4 == 0 and g.wo % 4 == 0
                   else "winograd2")
        wgrad = "winograd4" if side >= THRESHOLDS["onednn_winograd_min_side"] else "winograd2"
    return Plan(fwd, dgrad, wgrad)


# Thresholds of the CPU rule (positions = spatial size per image).
THRESHOLDS = {
    "min_channels": 64,
    "fwd_max_out_positions": 4,
    "dgrad_max_out_positions": 4,
    "dgrad_strided_max_in_positions": 64,
    "strided_wgrad_shift_min_macs": 1_000_000_000,
    "narrow_fwd_min_channels": 128,
    "winograd_min_side": 14,
    "winograd_min_macs": 250_000_000,
    "winograd_min_channels": 32,
    "winograd_max_channels": 160,
    "onednn_winograd_min_side": 7,
    "onednn_winograd_min_macs": 1_000_000_000,
    "onednn_winograd_min_channels": 128,
    "onednn_small_winograd_min_side": 4,
    "onednn_strided_shift_min_macs": 100_000_000,
    "stem_max_channels": 4,
    "stem_min_taps": 49,
    "onednn_min_macs": 1_000_000_000,
    "onednn_keep_winograd_min_channels": 128,
}


_IN_LOOP = contextvars.ContextVar("jaxvision_conv_in_loop", default=False)
_RECORD = contextvars.ContextVar("jaxvision_conv_record", default=None)


@contextlib.contextmanager
def recording():
    """Collect, for each convolution traced inside, its geometry, the setting asked for and
    the plan it got (a list of dicts; :mod:`jaxvision.explain` prints them)."""
    records = []
    token = _RECORD.set(records)
    try:
        yield records
    finally:
        _RECORD.reset(token)


def _record(**entry):
    records = _RECORD.get()
    if records is not None:
        records.append(entry)


@contextlib.contextmanager
def loop_body():
    """Mark the convolutions traced inside as the body of a loop (``lax.scan``,
    ``while_loop``, an ODE solver's steps), so that the CPU rule avoids XLA:CPU's native
    convolution gradients there.

    Inside a loop body XLA:CPU computes the native kernel-gradient of a convolution
    ~15-40x slower than the same gradient outside a loop (a 3x3 64->64 conv on 28x28 maps,
    batch 32, four steps of a ``lax.scan``: 10.3 s for the scan's gradient against 0.27 s
    unrolled) and the native input-gradient ~1.4x slower; as per-tap GEMMs ("shift") both
    run at their unrolled speed (0.38 s).  The plan is fixed when the forward pass is
    traced, so wrapping the function a loop calls (forward and, for adjoint methods, its
    re-traced vector-Jacobian product) is enough::

        def f(h, t, p):
            with conv.loop_body():
                return func.apply({"params": p}, h, t)
    """
    token = _IN_LOOP.set(True)
    try:
        yield
    finally:
        _IN_LOOP.reset(token)


def multiply_adds(g: Geometry) -> int:
    """Multiply-adds of the forward pass."""
    return g.n * g.ho * g.wo * g.c * g.o * g.kh * g.kw // g.groups


def onednn_eligible(impl: str) -> bool:
    """Whether ``impl`` may run oneDNN's primitives in this job: ``'onednn'`` always,
    ``'auto'`` when the job has a single device (see :func:`conv_plan`)."""
    return impl == "onednn" or (impl == "auto" and jax.device_count() == 1)


def onednn_applies(g: Geometry) -> bool:
    """Whether :mod:`jaxvision.layers.onednn` computes this conv: ungrouped, with paddings
    that oneDNN accepts once the rows and columns no output reads are dropped
    (:func:`_onednn_pads`)."""
    return g.groups == 1 and all(p >= 0 for pair in _onednn_pads(g) for p in pair)


def _onednn_pads(g: Geometry):
    """The paddings with the high side cut to what the last output position reads (oneDNN
    wants ``(in + pads - extent) / stride + 1`` to equal the output size exactly)."""
    out = []
    for size, k, s, d, o, (lo, hi) in zip((g.h, g.w), (g.kh, g.kw), g.strides, g.dilation,
                                          (g.ho, g.wo), g.pads):
        out.append((lo, min(hi, (o - 1) * s + (k - 1) * d + 1 - size - lo)))
    return tuple(out)


def conv_plan(g: Geometry, impl: str, platform: str, in_loop: bool = False,
              onednn_dtype: bool = True) -> Plan:
    """The formulation of each pass for ``impl`` on ``platform``.

    On the CPU, ``'auto'`` runs oneDNN's convolution primitives where they apply
    (:func:`onednn_applies`, float32: ``onednn_dtype``), the library is available
    (:func:`jaxvision.layers.onednn.available`), the job has a single device (XLA's
    partitioner cannot split a foreign call) and the conv has at least ``onednn_min_macs``
    multiply-adds, keeping Winograd passes of convs with many channels; otherwise
    ``'xla'``'s rule (:func:`choose_plan_cpu`).  ``'onednn'`` insists on the primitives.
    Measurements: docs/design/cpu_convolutions.md.
    """
    if impl == "lax":
        return Plan("lax", "lax", "lax")
    if impl == "matmul":
        form = "shift" if g.kh * g.kw == 1 else "im2col"
        return Plan(form, form, form)
    if platform != "cpu":
        # cuDNN / TPU convolutions have no such cliffs; keep the native op.
        return Plan("lax", "lax", "lax")
    large = multiply_adds(g) >= THRESHOLDS["onednn_min_macs"]
    if (impl == "onednn" or (large and onednn_eligible(impl))) and (
            onednn_dtype and onednn_applies(g)):
        if onednn.available():
            if impl == "auto" and min(g.c, g.o) >= THRESHOLDS["onednn_keep_winograd_min_channels"]:
                rule = choose_plan_cpu(g, cpu_conv_library())
                return Plan(*(f if f in WINOGRAD else "onednn" for f in rule))
            return Plan("onednn", "onednn", "onednn")
        if impl == "onednn":
            raise RuntimeError(f"{ENV_VAR}=onednn, but oneDNN's convolutions are unavailable: "
                               f"{onednn.unavailable_reason()}")
    plan = choose_plan_cpu(g, cpu_conv_library())
    if in_loop and g.groups == 1:
        # See loop_body(): the native gradients are slow inside loop bodies.
        plan = Plan(plan.fwd, *("shift" if f == "lax" else f for f in plan[1:]))
    return plan


# ----------------------------------------------------------------------------------------
# The plan applied: one formulation per pass (jaxvision.backends.cpu.formulations).
# ----------------------------------------------------------------------------------------



def _lax_nhwc(x, w, g: Geometry, precision, preferred):
    return lax.conv_general_dilated(
        x, w, g.strides, g.pads, rhs_dilation=g.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g.groups,
        precision=precision, preferred_element_type=preferred)


def _onednn_conv(x, w, g: Geometry):
    return onednn.conv(x, w, g.strides, _onednn_pads(g), g.dilation, g.groups,
                       precision=kernels.conv_precision())


def _apply(form: str, x, w, g: Geometry, precision, preferred):
    if form == "lax":
        return _lax_nhwc(x, w, g, precision, preferred)
    if form == "onednn":
        return _onednn_conv(x, w, g)
    if form in WINOGRAD:
        return wino_fwd(x, w, g, form, precision, preferred)
    return fwd_matmul(x, w, g, form, precision, preferred)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_nhwc(x, w, g: Geometry, plan: Plan, precision, preferred):
    return _apply(plan.fwd, x, w, g, precision, preferred)


def _conv_nhwc_jvp(g, plan, precision, preferred, primals, tangents):
    """``d conv(x, w) = conv(dx, w) + conv(x, dw)``, each term in its pass's formulation.

    Reverse mode transposes these linear terms: the ``dx`` term, written with
    ``plan.dgrad``, becomes the input gradient (for a matmul form ``ct @ W^T`` followed by
    the transpose of the patch gather, i.e. col2im); the ``dw`` term, written with
    ``plan.wgrad``, becomes the kernel gradient (``P^T @ ct``).  A ``custom_jvp`` rather
    than a ``custom_vjp`` keeps forward mode (``jax.jvp``, ``jacfwd``) working too.
    """
    from jax.custom_derivatives import SymbolicZero

    x, w = primals
    dx, dw = tangents
    y = _conv_nhwc(x, w, g, plan, precision, preferred)
    terms = []
    # A Winograd pass is written as the linear transpose of its backward computation, so
    # that reverse mode, transposing it back, runs that computation (a Winograd conv of the
    # output gradient; Winograd-domain GEMMs for the kernel) rather than the transpose of
    # the forward transforms, which XLA:CPU runs about twice as slowly.
    ct_aval = jax.ShapeDtypeStruct(y.shape, y.dtype)
    if not isinstance(dx, SymbolicZero):  # e.g. the input images: no input-gradient pass.
        if plan.dgrad in WINOGRAD:
            terms.append(jax.linear_transpose(
                lambda c: wino_dgrad(c, w, g, plan.dgrad, precision, preferred),
                ct_aval)(dx)[0])
        else:
            terms.append(_apply(plan.dgrad, dx, w, g, precision, preferred))
    if not isinstance(dw, SymbolicZero):
        if plan.wgrad in WINOGRAD:
            # Rematerialised: the transformed input tiles are rebuilt from the saved x.
            def dw_term(a, b):
                return jax.linear_transpose(
                    lambda c: wino_wgrad(c, a, g, plan.wgrad, precision, preferred),
                    ct_aval)(b)[0]
            terms.append(jax.checkpoint(dw_term)(x, dw))
        elif plan.wgrad == "lax":
            terms.append(_lax_nhwc(x, dw, g, precision, preferred))
        elif plan.wgrad == "onednn":
            terms.append(_onednn_conv(x, dw, g))
        elif plan.wgrad == "shift" and depthwise(g):
            terms.append(depthwise_by_image(x, dw, g, preferred))
        else:
            # Rematerialised so that the patches of x are rebuilt in the backward pass from
            # the saved x instead of being stored (KH*KW times the activation).
            terms.append(jax.checkpoint(
                lambda a, b: fwd_matmul(a, b, g, plan.wgrad, precision, preferred))(x, dw))
    if not terms:
        return y, jnp.zeros_like(y)
    t = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return y, t.astype(y.dtype)


_conv_nhwc.defjvp(_conv_nhwc_jvp, symbolic_zeros=True)


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
                         *, impl: str | Plan | None = None):
    """``lax.conv_general_dilated`` computed by the formulation :func:`conv_plan` picks.

    ``impl`` overrides ``JAXVISION_CONV_IMPL`` (``'auto'``, ``'lax'``, ``'matmul'``), or
    is a :class:`Plan` naming the formulation of each pass (used by tests and benchmarks).
    Calls the matmul forms cannot express (``lhs_dilation``, ``batch_group_count``, 3-D,
    mixed or integer dtypes) always use ``lax``.
    """
    impl = requested_impl() if impl is None else impl
    if isinstance(impl, Plan):
        bad = [f for f in impl if f not in FORMS]
        if bad:
            raise ValueError(f"Plan formulations must be among {FORMS}, got {bad}")
    elif impl not in IMPLS:
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
        _record(lhs=tuple(lhs.shape), rhs=tuple(rhs.shape), geometry=None, impl=impl,
                plan=Plan("lax", "lax", "lax"), chosen=None, platform=_platform(lhs),
                dtype=str(jnp.dtype(lhs.dtype)), in_loop=_IN_LOOP.get())
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
    geom = Geometry(n, h, wd, c, kh, kw, o, ho, wo, strides, pads, dilation, groups)
    pet = None if preferred_element_type is None else jnp.dtype(preferred_element_type)
    f32 = jnp.dtype(jnp.float32)
    onednn_ok = jnp.dtype(lhs.dtype) == f32 and pet in (None, f32)
    plan = chosen = (impl if isinstance(impl, Plan)
                     else conv_plan(geom, impl, _platform(lhs), _IN_LOOP.get(), onednn_ok))
    if not (winograd_applies(geom) and jnp.dtype(lhs.dtype) in WINOGRAD_DTYPES
            and pet in (None, jnp.dtype(lhs.dtype))):
        # Winograd's transforms lose too much in low precision; elsewhere it does not apply.
        plan = Plan(*("lax" if f in WINOGRAD else f for f in plan))
    if not (onednn_ok and onednn_applies(geom)):
        # The oneDNN primitives are float32 and ungrouped.
        plan = Plan(*("lax" if f == "onednn" else f for f in plan))
    _record(lhs=tuple(lhs.shape), rhs=tuple(rhs.shape), geometry=geom, impl=impl, plan=plan,
            chosen=chosen, platform=_platform(lhs), dtype=str(jnp.dtype(lhs.dtype)),
            in_loop=_IN_LOOP.get())
    if plan == Plan("lax", "lax", "lax"):
        return native()
    y = _conv_nhwc(x, w, geom, plan, precision, pet)
    if spatial == 1:
        y = y[:, 0]
    # NHWC -> the requested output layout.
    nhwc_of = (0, nd - 1, *range(1, nd - 1))  # position in y of (N, C, spatial...)
    perm = [0] * nd
    for k, dim in enumerate(dn.out_spec):
        perm[dim] = nhwc_of[k]
    return jnp.transpose(y, perm)


__all__ = ["ENV_VAR", "IMPLS", "Plan", "conv_general_dilated", "conv_plan", "loop_body",
           "requested_impl"]
