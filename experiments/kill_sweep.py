"""Kill harness: SIGKILL real training runs at random moments and check that rerunning the
same command always finishes bit-identically to an uninterrupted run.

    python experiments/kill_sweep.py --kills 24 --out /tmp/kill_sweep.json

Each trial starts a training subprocess (tests/train_driver.py, a tiny model on the bundled
digits, asynchronous orbax checkpoints every 2 steps), kills it either at a random moment or
the instant a checkpoint write is in flight (an ``*.orbax-checkpoint-tmp*`` directory exists),
reruns the same command -- killing it again with some probability -- until a rerun finishes,
then compares per-step train losses and every final parameter, bit for bit, with a reference
run.  The tally counts kills, kills during checkpoint writes, resumed runs, bit-identical
finishes and lost runs (a trial that could not finish or differs): lost must be 0.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "tests", "train_driver.py")

CONFIG = {"model": "test_cnn", "dataset.source": "bundled", "dataset.train_size": 512,
          "batch_size": 32, "learning_rate": 0.05, "log_every_steps": 1,
          "checkpoint_every_steps": 2, "eval_every_steps": 8, "num_train_steps": 16,
          "async_checkpoint": True, "max_to_keep": 2}


def command(workdir, sleep):
    return [sys.executable, DRIVER, workdir, json.dumps(CONFIG), "--sleep", str(sleep)]


def losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "train_loss" in row:
                out[row["step"]] = row["train_loss"]
    return out


def final_params(workdir):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from jaxvision.evaluate import load_run
    _, _, variables = load_run(workdir)
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)}


def run_to_end(workdir, sleep, timeout=600):
    proc = subprocess.run(command(workdir, sleep), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stderr[-2000:]


def kill_once(workdir, sleep, mode, rng, max_wait=120.0):
    """Start the run and SIGKILL it; returns what kind of moment it was killed at, or
    'finished' when the run ended first."""
    proc = subprocess.Popen(command(workdir, sleep), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = os.path.join(workdir, "checkpoints")
    metrics = os.path.join(workdir, "metrics.jsonl")
    start, training_since = time.time(), None
    # a moment within the training steps (after start-up and compilation)
    delay = rng.uniform(0.0, 16 * sleep + 1.0)
    try:
        while proc.poll() is None and time.time() - start < max_wait:
            names = os.listdir(ckdir) if os.path.isdir(ckdir) else []
            if mode == "during_write":
                # a write in flight while an earlier checkpoint is complete, so that the
                # rerun must skip the partial one and resume from the complete one
                if any("orbax-checkpoint-tmp" in n for n in names) and any(
                        n.isdigit() for n in names):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return "during_write"
            elif mode == "random":
                if training_since is None and os.path.exists(metrics):
                    training_since = time.time()
                if training_since is not None and time.time() - training_since >= delay:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return "random"
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "finished"


def sweep(kills: int, seed: int = 0, sleep: float = 0.15, workroot: str | None = None,
          modes: tuple[str, ...] | None = None) -> dict:
    """Run trials until ``kills`` kills happened.  ``modes`` fixes the kill moments in turn
    ('during_write' / 'random') instead of drawing them."""
    rng = random.Random(seed)
    workroot = workroot or tempfile.mkdtemp(prefix="kill_sweep_")
    ref = os.path.join(workroot, "reference")
    rc, err = run_to_end(ref, 0.0)
    if rc != 0:
        raise RuntimeError(f"reference run failed: {err}")
    ref_losses, ref_params = losses(ref), final_params(ref)
    tally = {"kills": 0, "kills_during_checkpoint_write": 0, "kills_at_random_moments": 0,
             "trials": 0, "resumed_runs": 0, "bit_identical_finishes": 0, "lost_runs": 0,
             "failures": []}
    trial = 0
    while tally["kills"] < kills and trial < 4 * kills:  # bounded: runs may end unkilled
        trial += 1
        tally["trials"] += 1
        wd = os.path.join(workroot, f"trial{trial}")
        # each trial: one or two kills, then a rerun to the end
        for _ in range(1 if modes else rng.choice((1, 1, 2))):
            if modes:
                mode = modes[tally["kills"] % len(modes)]
            else:
                mode = "during_write" if rng.random() < 0.5 else "random"
            what = kill_once(wd, sleep, mode, rng)
            if what == "finished":
                break
            tally["kills"] += 1
            tally["kills_during_checkpoint_write" if what == "during_write"
                  else "kills_at_random_moments"] += 1
        resumed = os.path.isdir(os.path.join(wd, "checkpoints")) and any(
            n.isdigit() for n in os.listdir(os.path.join(wd, "checkpoints")))
        rc, err = run_to_end(wd, 0.0)
        if rc != 0:
            tally["lost_runs"] += 1
            tally["failures"].append({"trial": trial, "error": err})
            continue
        tally["resumed_runs"] += int(resumed)
        same_losses = losses(wd) == ref_losses
        params = final_params(wd)
        same_params = params.keys() == ref_params.keys() and all(
            np.array_equal(params[k], ref_params[k]) for k in params)
        if same_losses and same_params:
            tally["bit_identical_finishes"] += 1
        else:
            tally["lost_runs"] += 1
            tally["failures"].append({"trial": trial, "same_losses": same_losses,
                                      "same_params": same_params})
    return tally


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep", type=float, default=0.15, help="host delay per step (s)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    tally = sweep(args.kills, args.seed, args.sleep)
    print(json.dumps(tally, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(tally, f, indent=2)
    sys.exit(1 if tally["lost_runs"] else 0)


if __name__ == "__main__":
    main()
