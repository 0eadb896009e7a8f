"""oneDNN's convolution primitives on XLA:CPU, as JAX primitives over XLA FFI calls.

XLA:CPU has no call into a library convolution: its "oneDNN" setting runs its own Eigen
convolution with oneDNN's matrix products (see ``conv_impl.ONEDNN_XLA_FLAGS``), and the
kernel gradients it emits transpose the activations first.  PyTorch runs oneDNN's own
convolution kernels (direct, JIT-compiled for the CPU's vector units, NHWC in place).  This
module reaches the same kernels from JAX: ``jaxvision/csrc/onednn_conv.cc`` wraps the
forward, backward-data and backward-weights primitives as XLA FFI handlers, and three JAX
primitives call them:

* ``conv_fwd(x, w) = y``; ``conv_dgrad(dy, w) = dx``; ``conv_wgrad(x, dy) = dw``, float32,
  NHWC activations, HWIO kernel, any strides, paddings, dilations and feature groups.

Each takes a ``precision``: ``"float32"`` computes in float32; ``"bfloat16"`` lets oneDNN
multiply in bfloat16 with float32 accumulation (its ``fpmath_mode::bf16``; the kernel
gradient rounds its two operands to bfloat16 itself and runs the bfloat16 primitive) where the
CPU has bfloat16 units (AMX or AVX512-BF16) and a kernel for the pass, the operands and
results staying float32 -- the CPU's counterpart of TF32 on a GPU.  Elsewhere it computes
float32.

Each is bilinear, and each one's transposes are the other two (``conv_fwd``'s with respect
to ``x`` is ``conv_dgrad``, with respect to ``w`` is ``conv_wgrad``, and so on), so reverse
mode, forward mode and higher derivatives all stay inside the three.  ``vmap`` over the
activations folds the mapped axis into the batch (test-time views stay one call); other
mappings and other platforms fall back to ``lax.conv_general_dilated``, whose semantics
they share.

The shim is compiled on first use with the system's C++ compiler (``$CXX``, else ``c++``)
against oneDNN's headers and library and jaxlib's FFI headers, and cached (by a hash of its
source, jaxlib's version and oneDNN's location) under ``$JAXVISION_CACHE_DIR`` (default
``~/.cache/jaxvision``).  oneDNN comes from the ``onednn-cpu-gomp`` and
``onednn-devel-cpu-gomp`` wheels (installed with jaxvision on Linux x86-64), found in the
Python environment's ``include/`` and ``lib/``, or under ``$JAXVISION_ONEDNN_ROOT``.
Where any of this is missing, :func:`available` is False (and :func:`unavailable_reason`
says why) and the convolution dispatch keeps XLA's own kernels.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.interpreters import ad, batching, mlir

try:
    from jax.extend.core import Primitive
except ImportError:  # older jax
    from jax.core import Primitive

ENV_ROOT = "JAXVISION_ONEDNN_ROOT"
ENV_CACHE = "JAXVISION_CACHE_DIR"
FPMATH = {"float32": 0, "bfloat16": 1}  # precision -> the handlers' fpmath attribute
_SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "onednn_conv.cc"
_TARGETS = {"fwd": "jaxvision_onednn_conv_fwd", "dgrad": "jaxvision_onednn_conv_dgrad",
            "wgrad": "jaxvision_onednn_conv_wgrad"}
_SYMBOLS = {"fwd": "JaxvisionOnednnConvFwd", "dgrad": "JaxvisionOnednnConvDgrad",
            "wgrad": "JaxvisionOnednnConvWgrad"}
_lock = threading.Lock()
_state: dict = {}


def _onednn_root() -> Path | None:
    """The prefix holding ``include/oneapi/dnnl/dnnl.hpp`` and ``lib/libdnnl.so*``."""
    candidates = [os.environ[ENV_ROOT]] if os.environ.get(ENV_ROOT) else [sys.prefix,
                                                                            sys.base_prefix]
    for root in map(Path, candidates):
        if ((root / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file()
                and any((root / "lib").glob("libdnnl.so*"))):
            return root
    return None


def _cache_dir() -> Path:
    base = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "jaxvision")
    return Path(base) / "onednn"


def _build(root: Path) -> Path:
    """Compile the shim (once per source, jaxlib and oneDNN; cached) and return its path."""
    src = _SOURCE.read_bytes()
    jaxlib = importlib.metadata.version("jaxlib")
    lib_dir = root / "lib"
    tag = hashlib.sha256(src + jaxlib.encode() + str(root.resolve()).encode()).hexdigest()[:16]
    out = _cache_dir() / tag / "libjaxvision_onednn.so"
    if out.is_file():
        return out
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w",
               f"-I{root / 'include'}", f"-I{jax.ffi.include_dir()}", str(_SOURCE),
               "-o", str(tmp_out), f"-L{lib_dir}", "-ldnnl", f"-Wl,-rpath,{lib_dir}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp_out, out)  # atomic: concurrent builders each publish a whole file
    return out


def _load():
    with _lock:
        if "lib" in _state or "error" in _state:
            return _state.get("lib")
        try:
            root = _onednn_root()
            if root is None:
                raise RuntimeError(
                    "oneDNN not found: pip install onednn-cpu-gomp onednn-devel-cpu-gomp "
                    f"(or set {ENV_ROOT} to a prefix with include/oneapi/dnnl and lib/libdnnl.so)")
            lib = ctypes.CDLL(str(_build(root)))
            for kind, target in _TARGETS.items():
                jax.ffi.register_ffi_target(
                    target, jax.ffi.pycapsule(getattr(lib, _SYMBOLS[kind])), platform="cpu")
            _state["lib"] = lib
        except Exception as err:  # noqa: BLE001 - any failure means: not available.
            _state["error"] = f"{type(err).__name__}: {err}"
        return _state.get("lib")


def available() -> bool:
    """Whether the oneDNN convolutions can run here (loads and, once, compiles the shim)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _state.get("error")


def version() -> str | None:
    """oneDNN's version, ``'3.2.0'``-style, where available."""
    lib = _load()
    if lib is None:
        return None
    v = lib.jaxvision_onednn_version()
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


# ----------------------------------------------------------------------------------------
# The three primitives.  Parameters (all static): strides, dilation, pads (NHWC spatial
# order), groups, precision, and the shape of the result's missing operand (``in_shape`` for
# the input gradient, ``kernel_shape`` for the kernel gradient).
# ----------------------------------------------------------------------------------------

def _lax_conv(x, w, strides, dilation, pads, groups):
    return lax.conv_general_dilated(
        x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)


# The references compute float32 whatever the precision (it permits bfloat16, never asks it).
def _ref_fwd(x, w, *, strides, dilation, pads, groups, precision):
    return _lax_conv(x, w, strides, dilation, pads, groups)


def _ref_dgrad(dy, w, *, strides, dilation, pads, groups, precision, in_shape):
    x = jax.ShapeDtypeStruct(in_shape, dy.dtype)
    return jax.linear_transpose(
        lambda v: _lax_conv(v, w, strides, dilation, pads, groups), x)(dy)[0]


def _ref_wgrad(x, dy, *, strides, dilation, pads, groups, precision, kernel_shape):
    w = jax.ShapeDtypeStruct(kernel_shape, x.dtype)
    return jax.linear_transpose(
        lambda v: _lax_conv(x, v, strides, dilation, pads, groups), w)(dy)[0]


conv_fwd_p = Primitive("jaxvision_onednn_conv_fwd")
conv_dgrad_p = Primitive("jaxvision_onednn_conv_dgrad")
conv_wgrad_p = Primitive("jaxvision_onednn_conv_wgrad")
_REFS = {conv_fwd_p: _ref_fwd, conv_dgrad_p: _ref_dgrad, conv_wgrad_p: _ref_wgrad}


def _geom(params):
    """The convolution's own parameters, without the result shape of a gradient."""
    return {k: params[k] for k in ("strides", "dilation", "pads", "groups", "precision")}


def _abstract_eval(prim, a, b, **params):
    """The result's aval, after checking dtypes and that the operands fit one convolution
    (the foreign calls read raw float32 buffers and derive the geometry from their shapes)."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"{prim.name} computes float32 only, got {a.dtype} and {b.dtype}")
    fwd = functools.partial(_ref_fwd, **_geom(params))
    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=np.float32)
    if prim is conv_fwd_p:
        out = jax.eval_shape(fwd, a, b).shape
    elif prim is conv_dgrad_p:
        out = params["in_shape"]
        y = jax.eval_shape(fwd, f32(out), b).shape
        if y != a.shape:
            raise ValueError(f"{prim.name}: output gradient {a.shape} does not fit an input "
                             f"of {out} and a kernel of {b.shape} (output {y})")
    else:
        out = params["kernel_shape"]
        y = jax.eval_shape(fwd, a, f32(out)).shape
        if y != b.shape:
            raise ValueError(f"{prim.name}: output gradient {b.shape} does not fit an input "
                             f"of {a.shape} and a kernel of {out} (output {y})")
    return jax.core.ShapedArray(tuple(out), np.float32)


def _batch(prim, args, dims, **params):
    """vmap: a mapped activation over a shared kernel (test-time views, per-example
    computations) folds the mapped axis into the batch and stays one oneDNN call; any other
    mapping (a mapped kernel, the kernel gradient of mapped operands) computes lax's
    convolution per element, which gives the same values."""
    (a, b), (da, db) = args, dims
    if prim is not conv_wgrad_p and da is not None and db is None:
        a = jnp.moveaxis(a, da, 0)
        m, n = a.shape[:2]
        if prim is conv_dgrad_p:
            params = dict(params, in_shape=(m * n, *params["in_shape"][1:]))
        out = prim.bind(a.reshape(m * n, *a.shape[2:]), b, **params)
        return out.reshape(m, n, *out.shape[1:]), 0
    return jax.vmap(functools.partial(_REFS[prim], **params), in_axes=dims)(a, b), 0


for _prim in (conv_fwd_p, conv_dgrad_p, conv_wgrad_p):
    # Eager calls run the primitive compiled on its own.
    _prim.def_impl(lambda a, b, _p=_prim, **params: jax.jit(
        lambda u, v: _p.bind(u, v, **params))(a, b))
    _prim.def_abstract_eval(functools.partial(_abstract_eval, _prim))
    # Elsewhere than on the CPU: XLA's own convolution, which computes the same thing.
    mlir.register_lowering(_prim, mlir.lower_fun(
        lambda a, b, _p=_prim, **params: _REFS[_p](a, b, **params), multiple_results=False))
    batching.primitive_batchers[_prim] = functools.partial(_batch, _prim)


def _ffi_rule(kind):
    rule = jax.ffi.ffi_lowering(_TARGETS[kind])

    def lower(ctx, a, b, *, strides, dilation, pads, groups, precision, **_shapes):
        if _load() is None:  # registers the handlers on first use
            raise RuntimeError(f"oneDNN convolutions are unavailable: {unavailable_reason()}")
        (pt, pb), (pl, pr) = pads
        i64 = np.int64  # the handlers' attributes are 64-bit integers
        return rule(ctx, a, b, sh=i64(strides[0]), sw=i64(strides[1]), dh=i64(dilation[0]),
                    dw=i64(dilation[1]), pt=i64(pt), pb=i64(pb), pl=i64(pl), pr=i64(pr),
                    groups=i64(groups), fpmath=i64(FPMATH[precision]))
    return lower


mlir.register_lowering(conv_fwd_p, _ffi_rule("fwd"), platform="cpu")
mlir.register_lowering(conv_dgrad_p, _ffi_rule("dgrad"), platform="cpu")
mlir.register_lowering(conv_wgrad_p, _ffi_rule("wgrad"), platform="cpu")


# Transposes: each primitive is bilinear in its two operands.
def _fwd_t_x(ct, x, w, **params):      # y = fwd(x, w): x-bar = dgrad(ct, w)
    return conv_dgrad_p.bind(ct, w, **_geom(params), in_shape=x.aval.shape)


def _fwd_t_w(ct, x, w, **params):      # w-bar = wgrad(x, ct)
    return conv_wgrad_p.bind(x, ct, **_geom(params), kernel_shape=w.aval.shape)


def _dgrad_t_dy(ct, dy, w, **params):  # dx = dgrad(dy, w): dy-bar = fwd(ct, w)
    return conv_fwd_p.bind(ct, w, **_geom(params))


def _dgrad_t_w(ct, dy, w, **params):   # w-bar = wgrad(ct, dy)
    return conv_wgrad_p.bind(ct, dy, **_geom(params), kernel_shape=w.aval.shape)


def _wgrad_t_x(ct, x, dy, **params):   # dw = wgrad(x, dy): x-bar = dgrad(dy, ct)
    return conv_dgrad_p.bind(dy, ct, **_geom(params), in_shape=x.aval.shape)


def _wgrad_t_dy(ct, x, dy, **params):  # dy-bar = fwd(x, ct)
    return conv_fwd_p.bind(x, ct, **_geom(params))


ad.defbilinear(conv_fwd_p, _fwd_t_x, _fwd_t_w)
ad.defbilinear(conv_dgrad_p, _dgrad_t_dy, _dgrad_t_w)
ad.defbilinear(conv_wgrad_p, _wgrad_t_x, _wgrad_t_dy)


def _params(strides, pads, dilation, groups, precision):
    """The primitives' static parameters, as hashable tuples."""
    if precision not in FPMATH:
        raise ValueError(f"oneDNN convolution precision {precision!r} is not one of "
                         f"{', '.join(FPMATH)}")
    return dict(strides=tuple(strides), dilation=tuple(dilation),
                pads=tuple(tuple(p) for p in pads), groups=int(groups), precision=precision)


def conv(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
         precision="float32"):
    """``lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)`` by oneDNN.

    Needs :func:`available`; differentiable to any order; ``precision`` as in the module's
    description (its gradients get the same)."""
    return conv_fwd_p.bind(x, w, **_params(strides, pads, dilation, groups, precision))


def dgrad(dy, w, in_shape, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
          precision="float32"):
    """The input gradient of :func:`conv` for an input of ``in_shape``."""
    return conv_dgrad_p.bind(dy, w, **_params(strides, pads, dilation, groups, precision),
                             in_shape=tuple(in_shape))


def wgrad(x, dy, kernel_shape, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1),
          groups=1, precision="float32"):
    """The kernel gradient of :func:`conv` for a kernel of ``kernel_shape``."""
    return conv_wgrad_p.bind(x, dy, **_params(strides, pads, dilation, groups, precision),
                             kernel_shape=tuple(kernel_shape))
