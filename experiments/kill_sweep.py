"""Kill harness: kill, interrupt and damage real training runs at random moments and check
that rerunning the same command always finishes bit-identically to an uninterrupted run.

    python experiments/kill_sweep.py --faults 40 --out experiments/results/kill_sweep_cpu.json

Each trial starts a training subprocess (tests/train_driver.py, a tiny model on the bundled
digits, asynchronous orbax checkpoints every 2 steps) and hits it with one or two faults:

* ``random``: SIGKILL at a random moment of the training steps;
* ``during_write``: SIGKILL the instant a checkpoint write is in flight (an
  ``*.orbax-checkpoint-tmp*`` directory exists) while an earlier checkpoint is complete;
* ``during_restore``: SIGKILL a rerun at a random moment of its start-up (loading data,
  verifying and restoring the newest checkpoint), once the workdir holds a checkpoint;
* ``sigint``: SIGINT (Ctrl-C) at a random moment: the run must checkpoint and exit 130;
* ``corrupt_newest``: SIGKILL the run once it holds two complete checkpoints, then flip a
  byte in or truncate a random file of the newer: the rerun must set it aside and resume
  from the previous one;
* ``second_trainer``: start a second trainer on the workdir while the first trains: it must
  fail at once naming the first, which goes on undisturbed.

Then the same command is rerun until it finishes, and its per-step train losses and every
final parameter are compared, bit for bit, with a reference run.  The tally counts faults by
kind, resumed runs, bit-identical finishes, lost runs (a trial that could not finish) and
wrong results (a finished run that differs from the reference): both must be 0.
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


MAX_WAIT = 900.0  # seconds a run may take to reach its kill moment (a loaded machine is slow)
MODES = ("random", "during_write", "during_restore", "sigint", "corrupt_newest",
         "second_trainer")


def command(workdir, sleep):
    return [sys.executable, DRIVER, workdir, json.dumps(CONFIG), "--sleep", str(sleep)]


def has_checkpoints(workdir, n=1):
    ckdir = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckdir) and sum(x.isdigit() for x in os.listdir(ckdir)) >= n


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


def run_to_end(workdir, sleep, timeout=MAX_WAIT):
    proc = subprocess.run(command(workdir, sleep), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stderr[-2000:]


def kill_once(workdir, sleep, mode, rng, max_wait=MAX_WAIT, delay=None):
    """Start the run and SIGKILL (``sigint``: SIGINT) it; returns what kind of moment it was
    stopped at, 'finished' when the run ended first, or 'failed: ...' for a wrong status."""
    os.makedirs(workdir, exist_ok=True)
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(command(workdir, sleep), stdout=subprocess.DEVNULL, stderr=log,
                            text=True)
    ckdir = os.path.join(workdir, "checkpoints")
    metrics = os.path.join(workdir, "metrics.jsonl")
    # a rerun finds the log of the run before it: its training starts with the first write
    # after this start (the log cut back to the restored step, or a new row)
    stale = os.stat(metrics).st_mtime_ns if os.path.exists(metrics) else None
    start, training_since = time.time(), None
    # a moment within the training steps (after start-up and compilation)
    delay = rng.uniform(0.0, 16 * sleep + 1.0) if delay is None else delay
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
            elif mode == "two_checkpoints":
                # two complete checkpoints and no write in flight: the newer one can be
                # damaged, and the rerun must fall back to the older
                if sum(n.isdigit() for n in names) >= 2 and not any(
                        "orbax-checkpoint-tmp" in n for n in names):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return "random"
            elif mode in ("random", "sigint"):
                if training_since is None and os.path.exists(metrics) and (
                        stale is None or os.stat(metrics).st_mtime_ns != stale):
                    training_since = time.time()
                if training_since is not None and time.time() - training_since >= delay:
                    if mode == "random":
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        return "random"
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=max_wait)
                    log.seek(0)
                    err = log.read()
                    if proc.returncode == 0:
                        return "finished"  # the signal came after the last step
                    if proc.returncode != 130:
                        return f"failed: SIGINT gave status {proc.returncode}: {err[-500:]}"
                    return "sigint"
            elif mode == "during_restore":
                # start-up, data loading, verifying and restoring take about `startup` s
                if time.time() - start >= delay:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return "during_restore"
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return "finished"


def corrupt_newest(workdir, rng):
    """Flip a byte in, or truncate, a random file of the newest checkpoint."""
    ckdir = os.path.join(workdir, "checkpoints")
    newest = os.path.join(ckdir, str(max(int(n) for n in os.listdir(ckdir) if n.isdigit())))
    files = sorted(os.path.join(r, n) for r, _, ns in os.walk(newest) for n in ns
                   if os.path.getsize(os.path.join(r, n)) > 0)
    path = rng.choice(files)
    data = bytearray(open(path, "rb").read())
    how = rng.choice(("flip", "truncate"))
    if how == "flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    else:
        data = data[:rng.randrange(len(data))]
    with open(path, "wb") as f:
        f.write(bytes(data))
    return f"{how} {os.path.relpath(path, ckdir)}"


def second_trainer(workdir, max_wait=MAX_WAIT):
    """Start a trainer, then a second one on the same workdir while the first trains.
    Returns (overlapped, refused_properly, first_status)."""
    # slow steps, so that the first still trains while the second starts up (the second
    # stops at the lock, before compiling: its start-up is imports and the config, ~5 s)
    first = subprocess.Popen(command(workdir, 2.0), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    metrics = os.path.join(workdir, "metrics.jsonl")
    start = time.time()
    while first.poll() is None and not os.path.exists(metrics) and time.time() - start < max_wait:
        time.sleep(0.01)
    second = subprocess.run(command(workdir, 0.0), capture_output=True, text=True,
                            timeout=max_wait)
    overlapped = first.poll() is None
    first.wait(timeout=max_wait)
    refused = second.returncode != 0 and "in use by another trainer" in second.stderr
    return overlapped, refused or not overlapped, first.returncode


def run_trial(wd, mode, rng, sleep, startup, ref_losses, ref_params) -> dict:
    """One trial: its faults, then a rerun to the end compared with the reference."""
    out = {"mode": mode, "faults": {}, "resumed": False, "outcome": None, "detail": None}

    def count(kind):
        out["faults"][kind] = out["faults"].get(kind, 0) + 1

    failed = None
    if mode == "second_trainer":
        overlapped, ok, status = second_trainer(wd)
        if overlapped:
            count(mode)
            out["second_trainer_refused"] = ok
            if not ok or status != 0:
                failed = f"second trainer not refused (ok={ok}) or first failed ({status})"
    elif mode == "corrupt_newest":
        # stop a run once it holds two checkpoints, then damage the newer one
        what = kill_once(wd, sleep, "two_checkpoints", rng)
        if what == "random":
            count("random")
        if has_checkpoints(wd, 2):
            out["corruption"] = corrupt_newest(wd, rng)
            count(mode)
    elif mode == "during_restore":
        what = kill_once(wd, sleep, "random", rng)
        if what == "random":
            count("random")
        if has_checkpoints(wd):
            # start-up (imports, data, verify + restore) is most of a run's time
            what = kill_once(wd, sleep, "during_restore", rng,
                             delay=rng.uniform(0.5, max(startup, 1.0)))
            if what == "during_restore":
                count(mode)
    else:
        for _ in range(rng.choice((1, 1, 2))):
            what = kill_once(wd, sleep, mode, rng)
            if what.startswith("failed"):
                failed = what
                break
            if what == "finished":
                break
            count(what)
    out["resumed"] = has_checkpoints(wd)
    rc, err = run_to_end(wd, 0.0)
    if failed or rc != 0:
        out["outcome"], out["detail"] = "lost", failed or err
        return out
    same_losses = losses(wd) == ref_losses
    params = final_params(wd)
    same_params = params.keys() == ref_params.keys() and all(
        np.array_equal(params[k], ref_params[k]) for k in params)
    if same_losses and same_params:
        out["outcome"] = "bit_identical"
    else:
        out["outcome"] = "wrong"
        out["detail"] = {"same_losses": same_losses, "same_params": same_params}
    return out


def sweep(faults: int, seed: int = 0, sleep: float = 0.15, workroot: str | None = None,
          modes: tuple[str, ...] | None = None, jobs: int = 1, progress=None) -> dict:
    """Run trials until ``faults`` faults happened.  ``modes`` fixes each trial's fault in
    turn instead of drawing it from :data:`MODES`; ``jobs`` trials run at a time (each in
    its own workdir; they share nothing but the reference).  ``progress(tally)`` is called
    after every batch of trials."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(seed)
    workroot = workroot or tempfile.mkdtemp(prefix="kill_sweep_")
    ref = os.path.join(workroot, "reference")
    # Every run of the sweep compiles the same two programs: they share one persistent XLA
    # compilation cache (a caller's JAX_COMPILATION_CACHE_DIR is kept), filled by the
    # reference run.  A second reference run then loads them from it; it must finish
    # bit-identical to the first, and its time is the start-up the restore kills aim at.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workroot, "xla-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    rc, err = run_to_end(ref, 0.0)
    if rc != 0:
        raise RuntimeError(f"reference run failed: {err}")
    ref_losses, ref_params = losses(ref), final_params(ref)
    t0 = time.time()
    rc, err = run_to_end(ref + "_cached", 0.0)
    startup = time.time() - t0  # the whole run; start-up is most of it
    cached_params = final_params(ref + "_cached")
    if rc != 0 or losses(ref + "_cached") != ref_losses or any(
            not np.array_equal(cached_params[k], ref_params[k]) for k in ref_params):
        raise RuntimeError(f"a run from the compilation cache differs from the reference "
                           f"(rc {rc}): {err}")
    tally = {"faults": 0, "by_kind": {m: 0 for m in MODES}, "trials": 0, "resumed_runs": 0,
             "bit_identical_finishes": 0, "lost_runs": 0, "wrong_results": 0,
             "second_trainer_refused": 0, "corruptions": [], "failures": []}
    trial = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while tally["faults"] < faults and trial < 4 * faults:  # bounded: runs may end unhit
            batch = []
            for _ in range(jobs):
                trial += 1
                mode = modes[(trial - 1) % len(modes)] if modes else rng.choice(MODES)
                wd = os.path.join(workroot, f"trial{trial}")
                batch.append((trial, pool.submit(run_trial, wd, mode,
                                                 random.Random(rng.random()), sleep, startup,
                                                 ref_losses, ref_params)))
            for t, fut in batch:
                r = fut.result()
                tally["trials"] += 1
                for kind, n in r["faults"].items():
                    tally["faults"] += n
                    tally["by_kind"][kind] += n
                tally["second_trainer_refused"] += int(r.get("second_trainer_refused", False))
                if "corruption" in r:
                    tally["corruptions"].append(r["corruption"])
                tally["resumed_runs"] += int(r["resumed"])
                key = {"bit_identical": "bit_identical_finishes", "lost": "lost_runs",
                       "wrong": "wrong_results"}[r["outcome"]]
                tally[key] += 1
                if r["outcome"] != "bit_identical":
                    tally["failures"].append({"trial": t, "mode": r["mode"],
                                              "detail": r["detail"]})
                print(f"trial {t} ({r['mode']}): faults {r['faults']}, {r['outcome']}; "
                      f"{tally['faults']} faults so far", file=sys.stderr, flush=True)
            if progress is not None:
                progress(tally)
    return tally


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", "--kills", type=int, default=40,
                    help="faults to inject in all (--kills: its former name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sleep", type=float, default=0.15, help="host delay per step (s)")
    ap.add_argument("--jobs", type=int, default=1, help="trials run at a time")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    start = time.time()
    env = environment()
    command_line = "python " + " ".join(
        [os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:])

    def write(tally, complete):
        tally = dict(tally, complete=complete, seconds=round(time.time() - start, 1),
                     environment=env, command=command_line)
        if args.out:  # after every batch, so that an interrupted sweep leaves its figures
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out + ".tmp", "w") as f:
                json.dump(tally, f, indent=2)
            os.replace(args.out + ".tmp", args.out)
        return tally

    tally = sweep(args.faults, args.seed, args.sleep, jobs=args.jobs,
                  progress=lambda t: write(t, False))
    print(json.dumps(write(tally, True), indent=2))
    sys.exit(1 if tally["lost_runs"] or tally["wrong_results"] else 0)


def environment() -> dict:
    import datetime
    import platform

    import jax
    import orbax.checkpoint as ocp
    from jaxvision.backends.cpu.platform import cpuinfo_field

    cpu = cpuinfo_field("model name") or platform.processor()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"cpu ({cpu}, {os.cpu_count()} cores)", "python": platform.python_version(),
            "jax": jax.__version__, "orbax-checkpoint": ocp.__version__,
            "numpy": np.__version__}


if __name__ == "__main__":
    main()
