"""The workdir's metrics log: ``metrics.jsonl`` (one JSON object per line) + TensorBoard."""
from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:
    """metrics.jsonl (one JSON object per line) + TensorBoard, written by process 0 only."""

    def __init__(self, workdir):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
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
