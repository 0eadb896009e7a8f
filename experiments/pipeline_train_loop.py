"""Does the training loop keep up with its input pipeline?  Runs, on one JPEG folder:

1. ``python -m jaxvision.data.benchmark`` (the host pipeline alone, ``--workers N``);
2. ``python -m jaxvision.train`` with a tiny model on that folder (same config, same workers),
   whose metrics rows carry ``img_per_s``;
3. the same training run on in-memory synthetic images of the same shape (no input
   pipeline: the step's own rate, to show the loop in 2. is input-bound);
4. the benchmark again (the machine may be shared: the larger of 1. and 4. is the
   reference, which can only lower the ratio).

    python experiments/pipeline_train_loop.py DIR [--workers 2] [--steps 100] [--batch 64]

writes ``experiments/results/pipeline_train_loop.csv``: train-loop img/s, benchmark img/s,
their ratio, the bare step's img/s, CPU, versions, date and this command.
"""
import argparse
import csv
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
CONFIG = os.path.join("experiments", "configs", "resnet50_imagenet.py")
RESULTS = os.path.join("experiments", "results", "pipeline_train_loop.csv")


def run(cmd):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{shlex.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def bench(args):
    out = run([sys.executable, "-m", "jaxvision.data.benchmark", "--config", CONFIG,
               f"--config.model={args.model}", f"--config.dataset.path={args.dir}",
               "--workers", str(args.workers), "--batch_size", str(args.batch),
               "--batches", "20", "--rounds", "2", "--results", ""])
    m = re.search(r"pipeline train: jaxvision ([\d,.]+) img/s", out.strip().splitlines()[-1])
    return float(m.group(1).replace(",", ""))


def train(args, workdir, synthetic=False):
    cmd = [sys.executable, "-m", "jaxvision.train", "--config", CONFIG, "--workdir", workdir,
           f"--config.model={args.model}", f"--config.batch_size={args.batch}",
           f"--config.num_train_steps={args.steps}", "--config.log_every_steps=10",
           f"--config.checkpoint_every_steps={args.steps}",
           f"--config.eval_every_steps={args.steps}", f"--config.dataset.workers={args.workers}",
           "--config.dataset.validation_size=64", "--config.eval_batch_size=64",
           "--config.warmup_epochs=0"]
    if synthetic:
        cmd += ["--config.dataset.source=synthetic", f"--config.dataset.train_size={args.batch * 4}"]
    else:
        cmd += ["--config.dataset.source=folder", f"--config.dataset.path={args.dir}"]
    run(cmd)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [r["img_per_s"] for r in map(json.loads, f) if "img_per_s" in r]
    # the first three logging windows hold compilation, the workers' start-up and the
    # batches they buffered meanwhile (workers * (prefetch + 1) + prefetch = 8)
    return float(np.median(rates[3:])), len(rates[3:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--model", default="test_resnet")
    args = ap.parse_args()
    args.dir = os.path.abspath(args.dir)
    from jaxvision.data.benchmark import cpu_model, versions

    b1 = bench(args)
    with tempfile.TemporaryDirectory() as tmp:
        loop, windows = train(args, os.path.join(tmp, "folder"))
        bare, _ = train(args, os.path.join(tmp, "synthetic"), synthetic=True)
    b2 = bench(args)
    ref = max(b1, b2)
    row = {"model": args.model, "workers": args.workers, "batch_size": args.batch,
           "train_loop_img_s": f"{loop:.1f}", "benchmark_img_s": f"{ref:.1f}",
           "ratio": f"{loop / ref:.3f}", "bare_step_img_s": f"{bare:.1f}",
           "benchmark_runs": f"{b1:.1f} {b2:.1f}", "windows": windows, "cpu": cpu_model(),
           "cores": os.cpu_count(), "versions": versions(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": "python experiments/pipeline_train_loop.py " + shlex.join(sys.argv[1:])}
    path = os.path.join(ROOT, RESULTS)
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [r for r in csv.DictReader(f)
                    if (r["model"], r["workers"], r["cpu"]) !=
                    (row["model"], str(row["workers"]), row["cpu"])]
    rows.append(row)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(row))
        w.writeheader()
        w.writerows(rows)
    print(f"train loop {loop:,.1f} img/s = {loop / ref:.1%} of the pipeline benchmark's "
          f"{ref:,.1f} img/s ({args.workers} workers); the bare step (in-memory data) runs at "
          f"{bare:,.1f} img/s")


if __name__ == "__main__":
    main()
