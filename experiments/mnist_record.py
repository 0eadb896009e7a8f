"""The MNIST speed-run recipe (``mnist_cnn:fast``) and its ablation, measured.

    python experiments/mnist_record.py --path ../shared/data/mnist [--rows recipe,no_ema] \
        [--seeds 0,1,2] [--out experiments/results/mnist_record_cpu.json]

Each row is the recipe with one change; each (row, seed) is one training command, run as a
subprocess exactly as a user would type it, and timed from the start of the process to its
exit (start-up, data loading, compilation, training and evaluation all included).  Rows
that change only the evaluation (``eval_only``) do not retrain: they evaluate the recipe's
final checkpoint of the same seed with ``python -m jaxvision.evaluate``, and their wall time
is the recipe run's.

The results file keeps every run (seed, held-out error, wall seconds, the machine's load
average while it ran) and each row's mean and spread; a row measured again replaces the old
one.  ``--table`` rewrites ``docs/mnist_record.md`` from the results file alone (a test
keeps the two in sync).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # jaxvision from this checkout, installed or not
OUT = os.path.join(REPO, "experiments", "results", "mnist_record_cpu.json")
TABLE = os.path.join(REPO, "docs", "mnist_record.md")
CONFIG = "mnist_cnn:fast"

# name -> (config, what changes, command-line overrides, eval_only)
ROWS = {
    "recipe": (CONFIG, "the recipe as configured", [], False),
    "no_tta": (CONFIG, "no test-time shifts (`eval_crops=center`)",
               ["--eval_crops", "center"], True),
    "ema": (CONFIG, "a moving average of the weights (decay 0.998) evaluated instead",
            ["--config.ema_decay=0.998"], False),
    "no_label_smoothing": (CONFIG, "no label smoothing", ["--config.label_smoothing=0"], False),
    "no_augment": (CONFIG, "no random 2-pixel shifts in training", ["--config.augment="], False),
    "cosine": (CONFIG, "cosine schedule instead of the linear decay",
               ["--config.schedule=cosine"], False),
    "float32_convs": (CONFIG, "oneDNN's convolutions multiply in float32, not bfloat16",
                      ["--config.kernels.conv_precision=float32"], False),
    "auto_convs": (CONFIG, ("the default convolution rule (float32) instead of oneDNN's "
                            "primitives"), ["--config.kernels.conv=auto",
                                  "--config.kernels.conv_precision=float32"], False),
    "narrow": (CONFIG, "a narrower network: widths (16, 64) and 128 hidden units",
               ["--config.model_kwargs.widths=(16,64)", "--config.model_kwargs.hidden=128"],
               False),
    "epochs_5": (CONFIG, "5 epochs instead of 6", ["--config.num_epochs=5"], False),
    "dropout_mlp": ("dropout_mlp_mnist", "dropout MLP with max-norm, as configured", [], False),
    "dropout_mlp_no_max_norm": ("dropout_mlp_mnist", "dropout MLP without max-norm",
                                ["--config.max_norm=0"], False),
}


def environment() -> dict:
    import jax

    from jaxvision.data.benchmark import cpu_model, versions
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
            "python": platform.python_version(), "jax": jax.__version__,
            "versions": versions()}


def train_command(config: str, path: str, workdir: str, seed: int, overrides) -> list[str]:
    return [sys.executable, "-m", "jaxvision.train", "--config", config,
            f"--config.dataset.path={path}", f"--config.seed={seed}", "--workdir", workdir,
            *overrides]


def final_error(workdir: str) -> float:
    from jaxvision.metrics_log import read_metrics
    evals = [r for r in read_metrics(workdir) if "eval_accuracy" in r]
    if not evals:
        raise RuntimeError(f"{workdir}: no evaluation row in metrics.jsonl")
    return 1.0 - evals[-1]["eval_accuracy"]


def run(cmd: list[str], log: str) -> float:
    t = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    wall = time.time() - t
    if rc != 0:
        with open(log) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{tail}")
    return wall


def evaluate_error(workdir: str, overrides, log: str) -> float:
    cmd = [sys.executable, "-m", "jaxvision.evaluate", "--workdir", workdir, *overrides]
    run(cmd, log)
    with open(log) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    return 1.0 - json.loads(lines[-1])["ensemble_accuracy"]


def summarize(runs: list[dict]) -> dict:
    errs = [r["error"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    return {"mean_error": statistics.mean(errs),
            "sd_error": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "min_error": min(errs), "max_error": max(errs),
            "mean_wall_s": statistics.mean(walls), "max_wall_s": max(walls)}


def measure(path: str, rows: list[str], seeds: list[int], scratch: str,
            done=lambda name, row: None) -> dict:
    """Run ``rows`` over ``seeds``; ``done(name, row)`` is called as each row completes."""
    out = {}
    recipe_runs = {}
    for name in rows:
        config, what, overrides, eval_only = ROWS[name]
        runs = []
        for seed in seeds:
            wd = os.path.join(scratch, f"{'recipe' if eval_only else name}_{seed}")
            if eval_only or name == "recipe":
                if seed not in recipe_runs:
                    load0 = os.getloadavg()[0]
                    wall = run(train_command(CONFIG, path, wd, seed, []), wd + ".log")
                    recipe_runs[seed] = {"seed": seed, "error": final_error(wd),
                                         "wall_s": round(wall, 1),
                                         "load": round(max(load0, os.getloadavg()[0]), 2)}
                base = recipe_runs[seed]
                if name == "recipe":
                    runs.append(dict(base))
                else:
                    err = evaluate_error(wd, overrides, wd + f".{name}.log")
                    runs.append({**base, "error": err})
            else:
                load0 = os.getloadavg()[0]
                wall = run(train_command(config, path, wd, seed, overrides), wd + ".log")
                runs.append({"seed": seed, "error": final_error(wd), "wall_s": round(wall, 1),
                             "load": round(max(load0, os.getloadavg()[0]), 2)})
            print(f"{name} seed {seed}: error {runs[-1]['error']:.4%}, "
                  f"{runs[-1]['wall_s']:.0f} s", flush=True)
        cmd = " ".join(["python -m jaxvision.train --config", config,
                        f"--config.dataset.path={os.path.relpath(path, REPO)}",
                        "--config.seed=S --workdir W",
                        *overrides]) if not eval_only else (
            "python -m jaxvision.evaluate --workdir W " + " ".join(overrides))
        out[name] = {"config": config, "change": what, "command": cmd, "eval_only": eval_only,
                     "runs": runs, **summarize(runs)}
        done(name, out[name])
    return out


def write_table(results: dict, path: str = TABLE) -> str:
    env = results["environment"]
    lines = [
        "# The MNIST speed-run recipe and its ablation",
        "",
        "Generated by `python experiments/mnist_record.py --table` from",
        "`experiments/results/mnist_record_cpu.json`; do not edit by hand.",
        "",
        f"Measured with jax {env['jax']}.  Held-out error on the last 10,000 of MNIST's 60,000",
        "training images, training on the other 50,000; wall time of the whole command (start-up,",
        "compilation, training, evaluation).  Rows that change only the evaluation reuse the",
        "recipe's runs.  Each row names the machine and the day it was measured on: the",
        "development machine is not always the same processor, so wall times compare only",
        "between rows measured on the same one.",
        "",
        "| row | config | change | error, mean ± sd (min-max) | seeds | wall s, mean (max) "
        "| load | measured on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["rows"].items():
        loads = max(x["load"] for x in r["runs"])
        where = r.get("environment", env)
        lines.append(
            f"| `{name}` | `{r['config']}` | {r['change']} | {r['mean_error']:.2%} ± "
            f"{r['sd_error']:.2%} ({r['min_error']:.2%}-{r['max_error']:.2%}) | "
            f"{len(r['runs'])} | {r['mean_wall_s']:.0f} ({r['max_wall_s']:.0f}) | {loads:.1f} "
            f"| {where['device'].removeprefix('cpu (').rstrip(')')}, {where['date'][:10]} |")
    lines += ["", ("Load is the highest 1-minute load average seen at a run's start or end "
                   "(2 cores: above 2, other work shared the CPU and the wall time is "
                   "inflated)."), ""]
    lines += [f"- `{name}`: `{r['command']}`" for name, r in results["rows"].items()]
    lines.append("")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=os.path.join(REPO, "..", "shared", "data", "mnist"),
                   help="folder with train-images-idx3-ubyte(.gz) and train-labels")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=OUT)
    p.add_argument("--table", action="store_true",
                   help="only rewrite docs/mnist_record.md from the results file")
    args = p.parse_args(argv)
    if args.table:
        with open(args.out) as f:
            print(write_table(json.load(f)))
        return
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    path = os.path.abspath(args.path)
    if not os.path.isdir(path):
        p.error(f"--path {path} is not a folder")
    def save(name, row):  # each row as it completes: a measured row replaces the old one
        results = {"environment": environment(), "rows": {}}
        if os.path.exists(args.out):
            with open(args.out) as f:
                old = json.load(f)
            # rows measured before rows carried their own environment: the file's
            results["rows"] = {k: {"environment": old["environment"], **r}
                               for k, r in old.get("rows", {}).items()}
        results["rows"][name] = {**row, "environment": environment()}
        results["rows"] = {k: results["rows"][k] for k in ROWS if k in results["rows"]}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        write_table(results)

    with tempfile.TemporaryDirectory(prefix="mnist_record_") as scratch:
        measure(path, rows, seeds, scratch, done=save)
    with open(args.out) as f:
        print(write_table(json.load(f)))


if __name__ == "__main__":
    main()
