"""The workdir's metrics log: ``metrics.jsonl`` (one JSON object per line) + TensorBoard."""
from __future__ import annotations

import json
import os

import jax
import numpy as np


def _summary_writer():
    """tensorboardX's ``SummaryWriter``, imported without importing torch where nothing has
    yet: tensorboardX imports torch, when installed, only to accept torch tensors (2.4 s of
    every run's start-up on a 2-core CPU), and this writer is given Python numbers."""
    import sys
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this is in place
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """metrics.jsonl (one JSON object per line) + TensorBoard, written by process 0 only."""

    def __init__(self, workdir):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active:
            try:
                self.tb = _summary_writer()(os.path.join(workdir, "tensorboard"))
            except ImportError:  # pragma: no cover
                self.tb = None

    def write(self, row: dict):
        if not self.active:
            return
        row = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: str, after_step: int):
    """On every start, drop rows logged after the step the run resumes from (all of them when
    it starts from scratch): rows a killed run wrote after its last checkpoint, or a
    previous run's, so the log holds each step once."""
    if not os.path.exists(path) or jax.process_index() != 0:
        return
    with open(path) as f:
        rows = [line for line in f if line.strip()]
    kept = []
    for line in rows:
        try:
            if json.loads(line).get("step", 0) <= after_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
    """The rows of ``workdir``'s metrics.jsonl (a line cut by a kill is skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} has no metrics.jsonl (not a jaxvision workdir, or "
                                f"no step logged yet)")
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return rows


def run_summary(workdir: str, wall_s: float) -> str:
    """One line for the end of a run, from its metrics.jsonl: steps, last training loss, last
    and best evaluation (accuracy and error), median training img/s, wall time, workdir."""
    rows = read_metrics(workdir)
    train = [r for r in rows if "train_loss" in r]
    evals = [r for r in rows if "eval_accuracy" in r]
    parts = [f"{max((r.get('step', 0) for r in rows), default=0)} steps"]
    if train:
        parts.append(f"train loss {train[-1]['train_loss']:.4f}")
    if evals:
        last = evals[-1]
        best = max(evals, key=lambda r: r["eval_accuracy"])
        parts.append(f"eval accuracy {last['eval_accuracy']:.2%} (error "
                     f"{1 - last['eval_accuracy']:.2%}; best {best['eval_accuracy']:.2%} at "
                     f"step {best['step']})")
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r]
    if rates:
        parts.append(f"{float(np.median(rates)):,.0f} img/s (median)")
    s = int(wall_s)
    parts.append(f"wall {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}")
    return "Summary: " + ", ".join(parts) + f"; workdir {workdir}"
