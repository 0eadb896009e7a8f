"""Kernel choices as configuration.

Four settings decide which kernels a run's layers compile to:

* ``conv``: the plan of every :class:`jaxvision.layers.Conv` (``auto``, ``onednn``, ``xla``,
  ``lax``, ``matmul``; :mod:`jaxvision.layers.conv_impl` describes each);
* ``conv_precision``: what oneDNN's convolution primitives may multiply in: ``float32``
  (``auto``), or ``bfloat16`` with float32 accumulation where the CPU has bfloat16 units
  (:mod:`jaxvision.layers.onednn`).  Only convolutions planned onto the primitives change, so
  a run or benchmark asking for ``bfloat16`` must set ``conv=onednn``
  (:func:`check_combination`);
* ``attention``: the kernel of ViT-style attention (``auto``, ``xla``, ``cudnn``;
  :func:`jaxvision.layers.attention_vit.attention_impl`);
* ``cpu_conv_library``: the library XLA:CPU runs its own convolutions with (``auto``,
  ``onednn``, ``ynnpack``), fixed when JAX starts its backends
  (:func:`jaxvision.backends.cpu.configure_cpu_convolutions`).

A run sets them in ``config.kernels`` (configs or ``--config.kernels.conv=onednn`` on the
command line) and records the values it used in its ``config.json``.  A program sets the
first three around the code that traces a model::

    with kernels.use(conv="onednn", conv_precision="bfloat16"):
        logits = jax.jit(model.apply)(variables, x)

The plan is fixed when a function is traced: a function jitted and traced inside the block
keeps its plan afterwards.  Unset (``""``), a setting falls back to its environment variable
(``JAXVISION_CONV_IMPL``, ``JAXVISION_CONV_PRECISION``, ``JAXVISION_ATTENTION_IMPL``,
``JAXVISION_XLA_CPU_CONV``), then to ``auto``.  Nothing here writes the environment.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

CONV_ENV_VAR = "JAXVISION_CONV_IMPL"
PRECISION_ENV_VAR = "JAXVISION_CONV_PRECISION"
ATTENTION_ENV_VAR = "JAXVISION_ATTENTION_IMPL"
LIBRARY_ENV_VAR = "JAXVISION_XLA_CPU_CONV"

CONV_IMPLS = ("auto", "onednn", "xla", "lax", "matmul")
CONV_PRECISIONS = ("auto", "float32", "bfloat16")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
LIBRARIES = ("auto", "onednn", "ynnpack")

_CHOICES = {"conv": (CONV_IMPLS, CONV_ENV_VAR),
            "conv_precision": (CONV_PRECISIONS, PRECISION_ENV_VAR),
            "attention": (ATTENTION_IMPLS, ATTENTION_ENV_VAR),
            "cpu_conv_library": (LIBRARIES, LIBRARY_ENV_VAR)}
_conv = contextvars.ContextVar("jaxvision_kernels_conv", default="")
_precision = contextvars.ContextVar("jaxvision_kernels_conv_precision", default="")
_attention = contextvars.ContextVar("jaxvision_kernels_attention", default="")


def check(name: str, value: str) -> str:
    """``value`` of setting ``name`` normalised ('' stays ''), or a ValueError naming both."""
    choices, _ = _CHOICES[name]
    v = (value or "").strip().lower()
    if v and v not in choices:
        raise ValueError(f"kernels.{name}={value!r} is not one of {', '.join(choices)}")
    return v


def _resolve(name: str, current: str) -> str:
    if current:
        return current
    choices, env = _CHOICES[name]
    v = os.environ.get(env, "").strip().lower() or "auto"
    if v not in choices:
        raise ValueError(f"{env}={v!r} is not one of {', '.join(choices)}")
    return v


def conv() -> str:
    """The convolution plan in effect: :func:`use`'s, else ``JAXVISION_CONV_IMPL``, else auto."""
    return _resolve("conv", _conv.get())


def conv_precision() -> str:
    """What oneDNN's convolution primitives may multiply in (``float32`` or ``bfloat16``):
    :func:`use`'s, else ``JAXVISION_CONV_PRECISION``, else ``auto``, which is float32."""
    v = _resolve("conv_precision", _precision.get())
    return "float32" if v == "auto" else v


def check_combination(conv: str, conv_precision: str) -> None:
    """A ValueError unless ``conv_precision`` (resolved) has a plan it applies to: bfloat16
    changes only the ``onednn`` plan, so asking for it with another would do nothing."""
    if conv_precision == "bfloat16" and conv != "onednn":
        raise ValueError(f"kernels.conv_precision=bfloat16 applies to oneDNN's convolution "
                         f"primitives only; it needs kernels.conv=onednn, not {conv!r}")


def attention() -> str:
    """The attention kernel in effect: :func:`use`'s, else ``JAXVISION_ATTENTION_IMPL``, else
    auto."""
    return _resolve("attention", _attention.get())


def cpu_conv_library(value: str = "") -> str:
    """The XLA:CPU convolution library asked for: ``value``, else ``JAXVISION_XLA_CPU_CONV``,
    else auto (what is in effect: :func:`jaxvision.backends.cpu.cpu_conv_library`)."""
    return _resolve("cpu_conv_library", check("cpu_conv_library", value))


@contextlib.contextmanager
def use(conv: str = "", attention: str = "", conv_precision: str = ""):
    """Trace the block's layers with these kernels (``""`` keeps the setting in effect)."""
    tokens = []
    for var, name, value in ((_conv, "conv", conv), (_attention, "attention", attention),
                             (_precision, "conv_precision", conv_precision)):
        value = check(name, value)
        if value:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def from_config(config) -> dict:
    """``config.kernels`` checked, as keyword arguments of :func:`use` (unset ones ``""``)."""
    k = config.get("kernels") if hasattr(config, "get") else None
    if k is None:
        return {"conv": "", "attention": "", "conv_precision": ""}
    return {"conv": check("conv", k.conv), "attention": check("attention", k.attention),
            "conv_precision": check("conv_precision", k.get("conv_precision", ""))}


def in_effect(config=None) -> dict:
    """What a run traced with ``config.kernels`` uses, every setting resolved (for its
    ``config.json`` and benchmark rows)."""
    from jaxvision.backends.cpu.platform import cpu_conv_library as library_in_effect
    want = from_config(config) if config is not None else {}
    with use(**want):
        return {"conv": conv(), "conv_precision": conv_precision(), "attention": attention(),
                "cpu_conv_library": library_in_effect()}
