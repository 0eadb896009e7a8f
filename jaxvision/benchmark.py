"""Training and inference throughput of registered models, optionally against timm/PyTorch.

    python -m jaxvision.benchmark --models resnet18,resnet50 --batch-sizes 32 \\
        --resolutions 64,224 --dtypes float32 --compare torch --out bench.csv

For every (model, batch size, resolution, dtype) it builds the model on synthetic data placed
on the device and measures:

* a full train step: forward, backward, SGD with momentum, BatchNorm in train mode with
  ``batch_stats`` updated, jitted with the state donated; median of ``--steps`` timed steps
  after ``--warmup`` untimed ones;
* inference (``train=False``) the same way;
* compile time, the model's FLOPs per step, achieved TFLOP/s and MFU (model FLOPs
  utilisation) where the device's peak is known, XLA's temporary-buffer size and the
  device's peak memory where the backend reports it.  The FLOPs are XLA's cost analysis of
  the step *lowered* (not compiled) with plain convolutions and XLA's attention, so they are
  the same on every backend: the compiled program's own count leaves out work done in
  library calls (cuDNN convolutions and cuBLAS matrix products on GPU are custom calls; it
  reported 101 GFLOP for a ResNet-50 train step at batch 256 instead of 6,082) and, on
  CPU, counts the smaller work of Winograd convolutions (:mod:`jaxvision.layers.conv_impl`).
  XLA leaves out the products of a kernel with zero padding, so its count is a little under
  fvcore-style counts (ResNet-50: 7.98 GFLOP per image forward against 8.2).

``--compare torch`` times the same timm model with PyTorch in the same process on the same
data shape, precision (bfloat16 as autocast) and memory format (channels_last), and reports
jaxvision's step time as a ratio of PyTorch's (< 1: jaxvision is faster).  Models timm does
not have use their PyTorch version in :mod:`jaxvision.reference_torch` where there is one
(the CIFAR Wide ResNets); others, or a missing torch, are reported and skipped.
On a GPU both run in bfloat16 with float32 weights when asked for ``--dtypes bfloat16``,
PyTorch with ``cudnn.benchmark`` on, JAX with XLA's autotuning; JAX keeps 45% of the GPU's
memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless set) so that PyTorch has the rest.
``--conv-impl`` sets the convolution plan of the models it traces (``jaxvision.kernels``).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxvision import kernels
from jaxvision.measure import (PEAK_TFLOPS, device_name, minor_faults, model_flops,
                               onednn_primitives, peak_memory_mb, peak_tflops, temp_mb, time_steps)

__all__ = ["COLUMNS", "PEAK_TFLOPS", "device_name", "format_table", "jax_setup", "main",
           "minor_faults", "model_flops", "onednn_primitives", "peak_tflops", "run",
           "step_flops", "time_steps", "torch_available", "write_rows"]

COLUMNS = [
    "model", "batch", "height", "width", "dtype", "backend", "device", "conv_impl",
    "conv_precision", "params",
    "train_compile_s", "train_step_ms", "train_img_s", "train_gflop_per_step",
    "train_tflop_s", "train_mfu", "train_xla_temp_mb",
    "infer_compile_s", "infer_step_ms", "infer_img_s", "infer_gflop_per_step",
    "infer_tflop_s", "infer_mfu", "peak_memory_mb",
    "torch_train_step_ms", "torch_infer_step_ms", "train_ratio_vs_torch",
    "infer_ratio_vs_torch", "train_page_faults", "infer_page_faults",
    "torch_train_page_faults", "torch_infer_page_faults", "note",
]
_TABLE_COLUMNS = [
    ("model", "model"), ("batch", "batch"), ("height", "res"), ("dtype", "dtype"),
    ("conv_impl", "conv"), ("conv_precision", "conv math"), ("train_step_ms", "train ms"),
    ("train_img_s", "train img/s"),
    ("train_compile_s", "compile s"), ("train_gflop_per_step", "train GFLOP"),
    ("train_tflop_s", "TFLOP/s"), ("train_mfu", "MFU"),
    ("infer_step_ms", "infer ms"), ("infer_img_s", "infer img/s"),
    ("peak_memory_mb", "peak MB"), ("torch_train_step_ms", "torch train ms"),
    ("train_ratio_vs_torch", "train x torch"), ("torch_infer_step_ms", "torch infer ms"),
    ("infer_ratio_vs_torch", "infer x torch"),
]


# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _restored_environ(*names: str):
    """Whatever the body does to these environment variables is undone on exit."""
    saved = {k: os.environ.get(k) for k in names}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _csv_list(s: str, cast: Callable = str) -> list:
    return [cast(v.strip()) for v in s.split(",") if v.strip()]


# ----------------------------------------------------------------------------------------
# jaxvision.
# ----------------------------------------------------------------------------------------

def _steps(model, num_classes: int):
    """The benchmarked programs: ``train_step((params, batch_stats, opt_state), x, y, key)``
    (forward, backward, SGD with momentum, BatchNorm statistics updated) and
    ``infer(variables, x)``, with the optax transformation the train step uses."""
    import jax
    import jax.numpy as jnp
    import optax

    takes_targets = "targets" in inspect.signature(model.__call__).parameters
    tx = optax.sgd(0.1, momentum=0.9)

    def train_step(state, x, y, key):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            kw = {"targets": jax.nn.one_hot(y, num_classes)} if takes_targets else {}
            logits, new_vars = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats", "losses"], rngs={"dropout": key}, **kw)
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y).mean()
            # Auxiliary losses models sow (already weighted) join the main loss.
            loss += sum(jnp.sum(v) for v in jax.tree.leaves(new_vars.get("losses", {})))
            return loss, new_vars.get("batch_stats", batch_stats)

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    def infer(variables, x):
        return model.apply(variables, x, train=False)

    return train_step, infer, tx


def step_flops(name: str, batch: int, height: int, width: int,
               dtype: str = "float32") -> dict[str, float | None]:
    """Nominal FLOPs of the benchmark's train step and inference for one configuration, from
    shapes alone (nothing is initialised or compiled): ``{"train": ..., "infer": ...}``.
    Lets FLOPs and MFU be derived for step times measured elsewhere."""
    import jax
    import jax.numpy as jnp

    from jaxvision.registry import create_model, model_cfg

    cfg = model_cfg(name)
    model = create_model(name, dtype=jnp.dtype(dtype))
    train_step, infer, tx = _steps(model, cfg["num_classes"])
    x = jax.ShapeDtypeStruct((batch, height, width, cfg["input_size"][2]), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), key, x)
    params, stats = variables["params"], variables.get("batch_stats", {})
    state = (params, stats, jax.eval_shape(tx.init, params))
    inputs = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    return {"train": model_flops(train_step, state, x, y, key),
            "infer": model_flops(infer, inputs, x)}


def jax_setup(name: str, batch: int, height: int, width: int, dtype: str,
               modes: Sequence[str]) -> tuple[dict, dict]:
    """Compile the train step and inference of a model on synthetic on-device data.

    Returns the row's static entries and, per mode, ``(run, record)``: ``run()`` executes one
    step and blocks; ``record(step_seconds)`` fills the mode's timing columns.
    """
    import jax
    import jax.numpy as jnp

    from jaxvision.registry import create_model, model_cfg
    from jaxvision.utils import compile_init, param_count

    cfg = model_cfg(name)
    channels, num_classes = cfg["input_size"][2], cfg["num_classes"]
    model = create_model(name, dtype=jnp.dtype(dtype))
    device = jax.devices()[0]
    row: dict[str, Any] = {"params": param_count(model, (height, width, channels))}

    k_data, k_label, k_init, k_drop = jax.random.split(jax.random.key(0), 4)
    images = jax.device_put(
        jax.random.normal(k_data, (batch, height, width, channels), jnp.float32), device)
    labels = jax.device_put(jax.random.randint(k_label, (batch,), 0, num_classes), device)
    variables = compile_init(jax.jit(lambda k, x: model.init(k, x, train=False)), k_init,
                             images)(k_init, images)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    # Inference gets its own copy: the train step donates (invalidates) its input state.
    variables = jax.tree.map(jnp.copy, {k: v for k, v in variables.items()
                                        if k in ("params", "batch_stats")})

    train_step, infer, tx = _steps(model, num_classes)
    peak = peak_tflops(getattr(device, "device_kind", ""), dtype)

    runners = {}

    def recorder(prefix: str, flops: float | None, compile_s: float):
        row[f"{prefix}_compile_s"] = compile_s
        if flops is not None:
            row[f"{prefix}_gflop_per_step"] = flops / 1e9

        def record(step_s: float):
            row[f"{prefix}_step_ms"] = step_s * 1e3
            row[f"{prefix}_img_s"] = batch / step_s
            if flops is not None:
                row[f"{prefix}_tflop_s"] = flops / step_s / 1e12
                if peak:
                    row[f"{prefix}_mfu"] = flops / step_s / (peak * 1e12)
        return record

    if "train" in modes:
        state = (params, batch_stats, tx.init(params))
        t0 = time.perf_counter()
        compiled = jax.jit(train_step, donate_argnums=0).lower(
            state, images, labels, k_drop).compile()
        compile_s = time.perf_counter() - t0
        row["train_xla_temp_mb"] = temp_mb(compiled)
        holder = [state]  # the donated state is replaced by each step's output.

        def run_train(compiled=compiled):
            holder[0], loss = compiled(holder[0], images, labels, k_drop)
            loss.block_until_ready()

        flops = model_flops(train_step, state, images, labels, k_drop)
        runners["train"] = (run_train, recorder("train", flops, compile_s))

    if "infer" in modes:
        t0 = time.perf_counter()
        compiled = jax.jit(infer).lower(variables, images).compile()
        compile_s = time.perf_counter() - t0
        runners["infer"] = (lambda c=compiled: c(variables, images).block_until_ready(),
                            recorder("infer", model_flops(infer, variables, images),
                                     compile_s))

    row["backend"] = jax.default_backend()
    row["device"] = device_name(device)
    return row, runners


# ----------------------------------------------------------------------------------------
# PyTorch / timm reference.
# ----------------------------------------------------------------------------------------

def torch_available() -> str | None:
    """None if torch and timm import, else the reason they do not."""
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return f"torch comparison skipped: {e}"
    return None


def _torch_setup(name: str, batch: int, height: int, width: int, dtype: str,
                 modes: Sequence[str], num_classes: int,
                 channels: int) -> tuple[dict[str, Callable[[], None]], str | None]:
    """Per mode, a function running one blocking PyTorch step of the timm model (or the
    reason there is none)."""
    import timm
    import torch

    from jaxvision.reference_torch import create_torch_model, has_torch_model

    if timm.is_model(name):
        model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=channels)
    elif has_torch_model(name) and channels == 3:
        model = create_torch_model(name, num_classes=num_classes)
    else:
        return {}, f"timm has no model {name!r}"
    import jax
    use_cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
    dev = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # let cuDNN pick its kernels, as XLA autotunes
    model = model.to(dev, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, height, width, device=dev).to(
        memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=dev)
    autocast = dict(device_type=dev.type, dtype=getattr(torch, dtype),
                    enabled=dtype != "float32")
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)
    out = {}
    if "train" in modes:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def train_step():
            model.train()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(**autocast):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            sync()

        out["train"] = train_step
    if "infer" in modes:
        def infer():
            model.eval()
            with torch.no_grad(), torch.autocast(**autocast):
                model(x)
            sync()

        out["infer"] = infer
    return out, None


# ----------------------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------------------

def _run(models: Sequence[str], batch_sizes: Sequence[int], resolutions: Sequence[int | None],
        dtypes: Sequence[str], *, steps: int = 5, warmup: int = 2,
        modes: Sequence[str] = ("train", "infer"), compare: str | None = None,
        conv_impl: str | None = None, conv_precision: str | None = None,
        profile: str | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Benchmark every combination; returns one row (dict over ``COLUMNS``) per combination.

    A resolution of ``None`` means the model's registered input size.  With ``profile`` a
    directory, three more steps of each mode are run under ``jax.profiler.trace`` after the
    timed ones, into ``profile/<model>_b<batch>_<res>_<dtype>_<mode>``.
    """
    import jax

    from jaxvision.layers import conv_impl as conv_impl_mod
    from jaxvision.registry import model_cfg

    impl = conv_impl_mod.requested_impl()  # run() set conv_impl for what is traced here
    precision = kernels.conv_precision()
    kernels.check_combination(impl, precision)
    bad_modes = set(modes) - {"train", "infer"}
    if bad_modes or not modes:
        raise ValueError(f"modes must be among 'train', 'infer', got {list(modes)}")
    bad_dtypes = set(dtypes) - {"float32", "bfloat16", "float16"}
    if bad_dtypes:
        raise ValueError(f"unsupported dtypes {sorted(bad_dtypes)}; "
                         "use float32, bfloat16 or float16")
    for name in models:
        model_cfg(name)  # an unknown name fails here, before anything is measured.
    torch_reason = None
    if compare == "torch":
        torch_reason = torch_available()
        if torch_reason:
            log(torch_reason)
    elif compare is not None:
        raise ValueError(f"--compare supports only 'torch', got {compare!r}")

    rows = []
    for name in models:
        cfg = model_cfg(name)
        for res in resolutions:
            height, width = (cfg["input_size"][:2] if res is None else (res, res))
            for batch in batch_sizes:
                for dtype in dtypes:
                    row = dict.fromkeys(COLUMNS)
                    row.update(model=name, batch=batch, height=height, width=width,
                               dtype=dtype, conv_impl=impl, conv_precision=precision)
                    log(f"[jaxvision] {name} batch={batch} {height}x{width} {dtype}: "
                        "compiling")
                    jax_row, runners = jax_setup(name, batch, height, width, dtype, modes)
                    torch_fns = {}
                    if compare == "torch" and not torch_reason:
                        torch_fns, why = _torch_setup(
                            name, batch, height, width, dtype, modes, cfg["num_classes"],
                            cfg["input_size"][2])
                        if why:
                            row["note"] = f"torch comparison skipped: {why}"
                            log(f"{name}: {row['note']}")
                    for mode in modes:
                        run_jax, record = runners[mode]
                        fns = [run_jax] + ([torch_fns[mode]] if mode in torch_fns else [])
                        log(f"[{'+'.join(['jaxvision', 'torch'][:len(fns)])}] {name} {mode}: "
                            f"{warmup} warm-up + {steps} timed steps")
                        timed = time_steps(fns, warmup, steps)
                        record(timed[0][0])
                        row[f"{mode}_page_faults"] = timed[0][1]
                        if len(timed) > 1:
                            row[f"torch_{mode}_step_ms"] = timed[1][0] * 1e3
                            row[f"torch_{mode}_page_faults"] = timed[1][1]
                        if profile:
                            where = os.path.join(
                                profile, f"{name}_b{batch}_{height}_{dtype}_{mode}")
                            with jax.profiler.trace(where):
                                for _ in range(3):
                                    run_jax()
                            log(f"[jaxvision] {name} {mode}: 3 steps traced to {where}")
                    row.update(jax_row)  # now holding the timings ``record`` wrote.
                    row["peak_memory_mb"] = peak_memory_mb(jax.devices()[0])
                    for mode in ("train", "infer"):
                        ours, ref = row[f"{mode}_step_ms"], row[f"torch_{mode}_step_ms"]
                        if ours and ref:
                            row[f"{mode}_ratio_vs_torch"] = ours / ref
                    rows.append(row)
    return rows


@functools.wraps(_run)
def run(*args, **kwargs) -> list[dict]:
    # conv_impl and conv_precision apply to the models traced by this call only
    # (jaxvision.kernels.use).
    from jaxvision.layers.conv_impl import IMPLS
    given = inspect.signature(_run).bind(*args, **kwargs).arguments
    conv_impl = given.get("conv_impl")
    if conv_impl is not None and conv_impl not in IMPLS:
        raise ValueError(f"conv_impl={conv_impl!r} is not one of {', '.join(IMPLS)}")
    with kernels.use(conv=conv_impl or "", conv_precision=given.get("conv_precision") or ""):
        return _run(*args, **kwargs)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width console table of the main columns."""
    cols = [(k, h) for k, h in _TABLE_COLUMNS if any(r.get(k) is not None for r in rows)]
    cells = [[h for _, h in cols]] + [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_rows(rows: Sequence[dict], path: str) -> None:
    """``.json``: a list of row objects; anything else: CSV with a header of ``COLUMNS``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".json"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump([{k: r.get(k) for k in COLUMNS} for r in rows], f, indent=1)
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaxvision-benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18",
                   help="comma-separated registered model names")
    p.add_argument("--batch-sizes", default="32", help="comma-separated batch sizes")
    p.add_argument("--resolutions", default="",
                   help="comma-separated square input sizes (default: each model's own)")
    p.add_argument("--dtypes", default="float32", help="float32, bfloat16 (comma-separated)")
    p.add_argument("--modes", default="train,infer", help="train, infer (comma-separated)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--compare", choices=["torch"], default=None,
                   help="also time the timm model with PyTorch in this process")
    p.add_argument("--conv-impl", choices=["auto", "onednn", "xla", "lax", "matmul"],
                   default=None,
                   help="convolution plan of the timed models (kernels.conv)")
    p.add_argument("--conv-precision", choices=list(kernels.CONV_PRECISIONS), default=None,
                   help="what oneDNN's convolution primitives multiply in "
                        "(kernels.conv_precision; bfloat16 needs --conv-impl onednn)")
    p.add_argument("--xla-cpu-conv", choices=["auto", "onednn", "ynnpack"], default=None,
                   help="library XLA:CPU runs convolutions with (default: "
                        "JAXVISION_XLA_CPU_CONV, else auto: oneDNN on Intel and AMD CPUs)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU only: torch.set_num_threads(N); N=1 also makes XLA:CPU "
                        "single-threaded (a steadier comparison on a loaded machine)")
    p.add_argument("--out", default=None, help="write rows to this .csv or .json file")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also trace 3 steps of each mode with jax.profiler into DIR "
                        "(summed per op by experiments/trace_summary.py)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    from jaxvision.backends.cpu import configure_cpu_convolutions
    configure_cpu_convolutions(args.xla_cpu_conv)  # before JAX starts its CPU backend
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        if args.threads == 1:
            # Read when the XLA backend starts, i.e. on first use below, not at import.
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false"
                                       " intra_op_parallelism_threads=1").strip()
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    mem_var = "XLA_PYTHON_CLIENT_MEM_FRACTION"
    with _restored_environ(mem_var):
        if args.compare == "torch":
            # Both frameworks share one GPU in this process: by default JAX would reserve 75%
            # of its memory before PyTorch allocates anything.  Read when JAX's GPU backend
            # starts.
            os.environ.setdefault(mem_var, "0.45")
        rows = run(_csv_list(args.models), _csv_list(args.batch_sizes, int),
                   _csv_list(args.resolutions, int) or [None], _csv_list(args.dtypes),
                   steps=args.steps, warmup=args.warmup, modes=_csv_list(args.modes),
                   compare=args.compare, conv_impl=args.conv_impl,
                   conv_precision=args.conv_precision, profile=args.profile,
                   log=lambda s: print(s, file=sys.stderr, flush=True))
    if rows:
        print(f"device: {rows[0]['device']}")
    print(format_table(rows))
    if args.out:
        write_rows(rows, args.out)
        print(f"wrote {len(rows)} rows to {args.out}")
    return rows


def cli() -> None:
    """Console-script entry point (``jaxvision-benchmark``, ``python -m jaxvision.benchmark``):
    re-executed under tcmalloc where it is installed (:mod:`jaxvision.allocator`)."""
    from jaxvision.allocator import reexec_with_allocator
    reexec_with_allocator()
    main()


if __name__ == "__main__":
    cli()
