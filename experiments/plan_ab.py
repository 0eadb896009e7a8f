"""A model's train step under variants of the CPU convolution rule, timed in turn in one process.

    python experiments/plan_ab.py --model resnet18 --resolution 64 [--batch 32] [--rounds 25] \
        --variant "" \
        --variant "onednn_small_winograd_min_side=99,onednn_strided_shift_min_macs=1e18"

Each ``--variant`` is a comma-separated list of ``KEY=VALUE`` overrides of the thresholds in
``conv_impl.THRESHOLDS`` (an empty string: the rule as it is), and may name the implementation
(``impl=xla``, ``impl=onednn``: ``JAXVISION_CONV_IMPL`` while it is traced); the first variant
is the reference.  Every variant's train step (the benchmark's: forward, backward, SGD with
momentum) is traced and compiled with its overrides in place, then all are run in turn,
one step each per round, for ``--rounds`` rounds, and the median and minimum step time of
each are printed with the ratio of its median to the reference's.  Timing the variants in
turn in one process is what makes a few percent visible on a shared machine, where the
same step timed in separate runs minutes apart varies by 5-10% (``docs/results.md``).
The library setting (``JAXVISION_XLA_CPU_CONV``) applies to all variants alike.
"""
from __future__ import annotations

import argparse
import difflib
import os
import statistics
import sys
import time

from jaxvision.layers import conv_impl


def parse_variant(spec: str) -> dict:
    """``"a=1,b=2e9"`` -> ``{"a": 1, "b": 2000000000}``, keys checked against ``THRESHOLDS``;
    ``impl=NAME`` (one of ``conv_impl.IMPLS``) is kept as a string."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"variant item {item!r} is not KEY=VALUE")
        if key == "impl":
            if value.strip() not in conv_impl.IMPLS:
                raise ValueError(f"impl={value!r} is not one of {', '.join(conv_impl.IMPLS)}")
            out[key] = value.strip()
            continue
        if key not in conv_impl.THRESHOLDS:
            close = difflib.get_close_matches(key, conv_impl.THRESHOLDS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown threshold {key!r}{hint} (known: conv_impl.THRESHOLDS)")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"threshold {key}={value!r} is not a number") from None
        out[key] = int(number) if number.is_integer() else number
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--resolution", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--variant", action="append", required=True,
                    help="comma-separated KEY=VALUE overrides of conv_impl.THRESHOLDS ('' = none)")
    args = ap.parse_args(argv)
    for name in ("resolution", "batch", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    variants = [(spec, parse_variant(spec)) for spec in args.variant]  # errors before compiling
    library = conv_impl.configure_cpu_convolutions()

    from jaxvision import benchmark  # imports JAX, after the library flags are in place

    table = dict(conv_impl.THRESHOLDS)
    runs = []
    for spec, overrides in variants:
        overrides = dict(overrides)
        impl = overrides.pop("impl", None)
        saved_impl = os.environ.get(conv_impl.ENV_VAR)
        if impl is not None:
            os.environ[conv_impl.ENV_VAR] = impl
        conv_impl.THRESHOLDS.update(overrides)
        try:
            row, runners = benchmark.jax_setup(args.model, args.batch, args.resolution,
                                                args.resolution, "float32", ["train"])
        finally:
            conv_impl.THRESHOLDS.clear()
            conv_impl.THRESHOLDS.update(table)
            if saved_impl is None:
                os.environ.pop(conv_impl.ENV_VAR, None)
            else:
                os.environ[conv_impl.ENV_VAR] = saved_impl
        run = runners["train"][0]
        run()
        print(f"[{spec or 'as is'}] compiled in {row['train_compile_s']:.1f} s", flush=True)
        runs.append(run)
    times = [[] for _ in runs]
    for _ in range(args.rounds):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            run()
            times[i].append((time.perf_counter() - t0) * 1e3)
    print(f"{args.model}, batch {args.batch}, {args.resolution}x{args.resolution}, "
          f"{library} convolutions, {args.rounds} rounds; ms per train step:")
    ref = statistics.median(times[0])
    results = []
    for (spec, _), ts in zip(variants, times):
        med = statistics.median(ts)
        results.append({"variant": spec, "median_ms": med, "min_ms": min(ts),
                        "ratio": med / ref})
        print(f"  median {med:8.1f}  min {min(ts):8.1f}  x{med / ref:.3f}  {spec or 'as is'}")
    return results


if __name__ == "__main__":
    from jaxvision.allocator import reexec_with_allocator

    reexec_with_allocator()  # under tcmalloc where installed, as the benchmark runs
    sys.exit(main() and 0)
