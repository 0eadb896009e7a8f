"""How the benchmark measures: step times taken in turn with their page faults, FLOPs from
XLA's cost analysis of the program as lowered with plain convolutions, XLA's temporary buffer
and the device's peak memory, the device named with what changes a CPU's timings, and the
datasheet peaks that MFU is reported against (see :mod:`jaxvision.benchmark`)."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxvision import kernels

# Peak dense TFLOP/s per device kind and compute dtype (vendor datasheets).  float32 matmuls
# run on TF32 tensor cores under XLA's default precision on these GPUs.
PEAK_TFLOPS = {
    "h100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5},
    "h200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.5},
    "a100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
}


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_steps(fns: Sequence[Callable[[], Any]], warmup: int,
                steps: int) -> list[tuple[float, float | None]]:
    """Per function, the median wall time (s) of ``steps`` calls after ``warmup`` calls and
    the mean number of minor page faults per call (None where the OS does not count them).

    The functions are called in turn (a step of each, then the next step of each), so that
    on a shared, noisy machine they see the same load and their ratio stays meaningful.
    Each function must block until its result is ready.  Page faults are counted for the
    whole process over each call: on a CPU backend they are the first touches of memory
    the step's allocator has just mapped (XLA:CPU maps its temporary buffer afresh for
    every execution), and each costs kernel time inside the step.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    faults = [0 for _ in fns]
    counted = minor_faults() is not None
    for _ in range(steps):
        for i, fn in enumerate(fns):
            f0 = minor_faults()
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
            if counted:
                faults[i] += minor_faults() - f0
    return [(statistics.median(ts), f / steps if counted else None)
            for ts, f in zip(times, faults)]


def program_flops(program) -> float | None:
    """FLOPs of one call of a lowered or compiled XLA program, from its cost analysis."""
    try:
        cost = program.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it.
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


def model_flops(fn: Callable, *args) -> float | None:
    """Nominal FLOPs of one call of ``fn(*args)``: XLA's cost analysis of the program lowered
    with ``lax.conv_general_dilated`` for every convolution and XLA's attention, before any
    backend rewrites it (see the module docstring).  Only traced and lowered, not compiled;
    ``args`` may be arrays or ``jax.ShapeDtypeStruct``s.
    """
    import jax

    # Lowered for the CPU from shapes alone: XLA's pre-compilation cost analysis is not
    # implemented for backends reached through PJRT plugins (CUDA among them), and the CPU
    # always exists.  The program is the same as the device's (plain convolutions, XLA
    # attention), so are its FLOPs.
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    abstract = jax.tree.map(
        lambda a: (jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu)
                   if hasattr(a, "shape") and hasattr(a, "dtype") else a), args)
    with kernels.use(conv="lax", attention="xla"):
        # A new function object, so that no trace made under other settings is reused.
        lowered = jax.jit(lambda *a: fn(*a)).lower(*abstract)
    return program_flops(lowered)


def temp_mb(compiled) -> float | None:
    try:
        mem = compiled.memory_analysis()
        return mem.temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001
        return None


def peak_memory_mb(device) -> float | None:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
    return None if peak is None else peak / 2**20


def device_name(device) -> str:
    """The device's kind; for a CPU, ``cpu: <model name> (<N> cores), <library>
    convolutions, [oneDNN <version> primitives, ]<allocator>``, since XLA calls every CPU
    just ``cpu``, CPU timings differ widely between processor models, XLA:CPU can run
    convolutions with either of two libraries
    (:func:`jaxvision.backends.cpu.configure_cpu_convolutions`), the plan may call
    oneDNN's convolution primitives (:mod:`jaxvision.layers.onednn`), and the C allocator
    changes the step time (:mod:`jaxvision.allocator`)."""
    kind = getattr(device, "device_kind", str(device))
    if getattr(device, "platform", "") != "cpu":
        return kind
    import platform

    from jaxvision.allocator import allocator_name
    from jaxvision.backends.cpu.platform import cpu_conv_library, cpuinfo_field
    model = cpuinfo_field("model name") or platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    malloc = allocator_name()
    return (f"{kind}: {model} ({cores} cores), {cpu_conv_library()} convolutions, "
            + onednn_primitives() + ("C library malloc" if malloc == "system" else malloc))


def onednn_primitives() -> str:
    """``'oneDNN 3.2.0 primitives, '`` where the convolution plan may use them (single-device
    CPU job, ``JAXVISION_CONV_IMPL`` auto or onednn, the library loads), else ``''``."""
    from jaxvision.layers import conv_impl, onednn
    if conv_impl.onednn_eligible(conv_impl.requested_impl()) and onednn.available():
        return f"oneDNN {onednn.version()} primitives, "
    return ""


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """Datasheet dense peak for a device kind string such as 'NVIDIA H100 80GB HBM3'."""
    kind = device_kind.lower()
    for key, table in PEAK_TFLOPS.items():
        if key in kind:
            return table.get(dtype)
    return None

