"""Where the time of a traced run went, per XLA operation.

    python experiments/trace_summary.py DIR [--steps N] [--top 25]

DIR is what ``jax.profiler.trace`` wrote (``python -m jaxvision.benchmark --profile DIR``,
or a training run's ``WORKDIR/profile`` with ``--config.profile_steps=A,B``); the newest
``*.trace.json.gz`` under it is read.  On a GPU the operations are read from the device's
"XLA Ops" line; on the CPU from the host threads that run XLA's thunks.  The report gives
the busy time (the union of the operations' intervals), the span from the first operation
to the last, and the operations summed by name with their numbered suffixes dropped
(``fusion.12`` and ``fusion.40`` are both ``fusion``), each per step with ``--steps``.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

# Host-side spans of the runtime and of Python, not XLA operations.
_HOST_NOISE = ("ThunkExecutor", "Slinky", "PjitFunction", "PjRt", "CommonPjRt",
               "ParseArguments", "Handle inputs", "shard_args", "end: ")


def newest_trace(root: str) -> str:
    found = glob.glob(os.path.join(root, "**", "*.trace.json.gz"), recursive=True)
    if not found:
        raise SystemExit(f"no *.trace.json.gz under {root!r}: is it a jax.profiler trace "
                         "directory?")
    return max(found, key=os.path.getmtime)


def op_events(events: list[dict]) -> tuple[str, list[dict]]:
    """(where, complete events of XLA operations) from a trace's events."""
    procs = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    device = [pid for pid, name in procs.items() if re.search(r"/device:(GPU|TPU)", name)]
    if device:
        ops = [e for e in spans if e["pid"] in device
               and threads.get((e["pid"], e["tid"]), "") == "XLA Ops"]
        if ops:
            return f"{procs[device[0]]}, XLA Ops", ops
        ops = [e for e in spans if e["pid"] in device
               and threads.get((e["pid"], e["tid"]), "").startswith("Stream")]
        return f"{procs[device[0]]}, streams (kernels)", ops
    ops = [e for e in spans if not e["name"].startswith(("$",) + _HOST_NOISE)]
    return "host threads (XLA:CPU thunks)", ops


def busy_us(ops: list[dict]) -> float:
    """Length of the union of the events' intervals (overlapping work counted once)."""
    total, end = 0.0, None
    for s, d in sorted((e["ts"], e["dur"]) for e in ops):
        if end is None or s > end:
            total, end = total + d, s + d
        elif s + d > end:
            total, end = total + (s + d - end), s + d
    return total


def summarize(path: str, steps: int = 1, top: int = 25) -> str:
    with gzip.open(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    where, ops = op_events(events)
    if not ops:
        raise SystemExit(f"{path}: no XLA operations found in the trace")
    by_name, count = collections.Counter(), collections.Counter()
    for e in ops:
        name = re.sub(r"(\.\d+)+$", "", e["name"])
        by_name[name] += e["dur"]
        count[name] += 1
    span = max(e["ts"] + e["dur"] for e in ops) - min(e["ts"] for e in ops)
    busy = busy_us(ops)
    summed = sum(by_name.values())
    shown = by_name.most_common(top)
    per = f" per step (of {steps})" if steps > 1 else ""
    lines = [f"{path}", f"operations on: {where}",
             f"span {span / steps / 1e3:.2f} ms{per}, busy {busy / steps / 1e3:.2f} ms "
             f"({busy / span:.0%} of the span), operations summed "
             f"{summed / steps / 1e3:.2f} ms",
             f"{'ms' + per:>12}  {'share':>6}  {'count':>6}  operation"]
    for name, us in shown:
        lines.append(f"{us / steps / 1e3:12.3f}  {us / summed:6.1%}  {count[name] / steps:6.0f}  "
                     f"{name[:100]}")
    rest = summed - sum(us for _, us in shown)
    if rest > 0:
        lines.append(f"{rest / steps / 1e3:12.3f}  {rest / summed:6.1%}  {'':>6}  "
                     f"({len(by_name) - top} others)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace_dir")
    ap.add_argument("--steps", type=int, default=1, help="steps in the trace (for per-step "
                    "figures: 3 for the benchmark's --profile)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        ap.error("--steps and --top must be >= 1")
    print(summarize(newest_trace(args.trace_dir), args.steps, args.top))


if __name__ == "__main__":
    sys.exit(main())
