"""The host CPU and the library XLA:CPU runs convolutions with.

XLA reads ``XLA_FLAGS`` once, when its CPU backend starts, so the library is chosen before any
JAX computation: :func:`configure_cpu_convolutions`, which every command-line entry point
calls first (a program importing jaxvision calls it too, or sets the flags itself).
:func:`cpu_vendor` and :func:`cpuinfo_field` describe the processor for the plan rule
(:func:`jaxvision.layers.conv_impl.choose_plan_cpu`) and for the benchmarks' device column.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re

from jaxvision import kernels


@functools.lru_cache(maxsize=None)
def cpuinfo_field(name: str) -> str:
    """The value of the first ``name`` line of ``/proc/cpuinfo`` (``vendor_id``, ``model
    name``, ...), or ``""`` where there is none (another OS, or no such line)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """``'intel'``, ``'amd'`` or ``'other'``: the host CPU's maker, for the one CPU rule
    whose best choice differs between them."""
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(cpuinfo_field("vendor_id"),
                                                               "other")


# XLA:CPU runs convolutions through YNNPACK by default; these flags take them out of YNNPACK's
# fusions and ask for oneDNN's, read when its CPU backend starts.  With jaxlib 0.10.2 what
# then runs is XLA's own (Eigen) convolution kernel, whose matrix products call oneDNN's
# sgemm (ONEDNN_VERBOSE=all logs gemm_api calls and no convolution primitive; the second
# flag alone gives the same calls and times).  "oneDNN" in this module means that path.
ONEDNN_XLA_FLAGS = ("--xla_cpu_experimental_onednn_fusion_type=individual_convolution",
                    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
LIBRARY_ENV_VAR = kernels.LIBRARY_ENV_VAR
LIBRARIES = kernels.LIBRARIES
# XLA aborts the process on a flag it does not know.  jaxlib 0.8.2 is the first with both
# flags and the individual-convolution fusion; the oneDNN path was measured and tested with
# 0.10, so older jaxlibs keep XLA's default.
ONEDNN_MIN_JAXLIB = (0, 10, 0)


def jaxlib_version() -> tuple[int, ...] | None:
    """The installed jaxlib's (major, minor, patch), read without starting JAX."""
    try:
        match = re.match(r"(\d+)\.(\d+)\.(\d+)", importlib.metadata.version("jaxlib"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(v) for v in match.groups()) if match else None


def cpu_conv_library() -> str:
    """``'onednn'`` where ``XLA_FLAGS`` hand XLA:CPU's convolutions to oneDNN
    (:data:`ONEDNN_XLA_FLAGS`), otherwise ``'ynnpack'`` (XLA's default).  Read from the
    environment at trace time; the flags themselves take effect when JAX starts its CPU
    backend, which :func:`configure_cpu_convolutions` must therefore precede."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return "onednn" if all(f in flags for f in ONEDNN_XLA_FLAGS) else "ynnpack"


def backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume not started.
        return False


def configure_cpu_convolutions(choice: str | None = None) -> str:
    """Choose the library XLA:CPU runs convolutions with, before JAX starts its backends.

    ``choice`` (default: the ``JAXVISION_XLA_CPU_CONV`` environment variable, else
    ``'auto'``): ``'onednn'`` appends :data:`ONEDNN_XLA_FLAGS` to ``XLA_FLAGS``;
    ``'ynnpack'`` leaves XLA's default; ``'auto'`` picks oneDNN on Intel and AMD CPUs, where
    it measured faster (docs/design/cpu_convolutions.md), and YNNPACK elsewhere.
    oneDNN needs jaxlib >= :data:`ONEDNN_MIN_JAXLIB` (``auto`` keeps XLA's default on an
    older one, an explicit ``'onednn'`` is refused with a RuntimeError).
    ``XLA_FLAGS`` that already name either fusion type are the user's choice and are left
    alone.  Returns the library in effect (:func:`cpu_conv_library`).  The command-line
    entry points (training, evaluation, benchmark) call this first; a program importing
    jaxvision calls it before its first JAX computation, or sets the flags itself.
    """
    choice = (os.environ.get(LIBRARY_ENV_VAR, "auto") if choice is None else choice)
    choice = choice.strip().lower() or "auto"
    if choice not in LIBRARIES:
        raise ValueError(f"{LIBRARY_ENV_VAR}={choice!r} is not one of {', '.join(LIBRARIES)}")
    flags = os.environ.get("XLA_FLAGS", "")
    user_set = any(f.split("=")[0] in flags for f in ONEDNN_XLA_FLAGS)
    want = choice == "onednn" or (choice == "auto" and cpu_vendor() in ("intel", "amd"))
    if not want or user_set:
        return cpu_conv_library()
    version = jaxlib_version()
    if version is None or version < ONEDNN_MIN_JAXLIB:
        if choice == "onednn":
            need = ".".join(map(str, ONEDNN_MIN_JAXLIB))
            have = ".".join(map(str, version)) if version else "not found"
            raise RuntimeError(
                f"{LIBRARY_ENV_VAR}=onednn needs jaxlib >= {need} (the XLA:CPU flags of "
                f"ONEDNN_XLA_FLAGS); installed jaxlib: {have}")
        return cpu_conv_library()
    if backends_started():
        if choice == "onednn":
            raise RuntimeError(
                "configure_cpu_convolutions('onednn') must run before JAX starts its backends "
                "(XLA reads XLA_FLAGS once, at its first computation)")
        return cpu_conv_library()
    os.environ["XLA_FLAGS"] = " ".join([flags.strip(), *ONEDNN_XLA_FLAGS]).strip()
    return "onednn"
