"""Shared helpers for the training tests."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import ml_collections

from jaxvision.config import default_config, lock

DRIVER = os.path.join(os.path.dirname(__file__), "train_driver.py")
EXPERIMENTS = os.path.join(os.path.dirname(__file__), os.pardir, "experiments")


def load_experiment(name: str):
    """Import the script ``experiments/<name>.py`` (a folder of scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXPERIMENTS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """A seconds-long run: test_cnn on 256 bundled digits."""
    c = default_config()
    c.model = "test_cnn"
    c.dataset.source = "bundled"
    c.dataset.train_size = 256
    c.batch_size = 32
    c.num_train_steps = 6
    c.learning_rate = 0.05
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.eval_every_steps = 3
    c.async_checkpoint = False
    c.update_from_flattened_dict(overrides)
    return lock(c)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(workdir):
    return {r["step"]: r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r}


def driver_cmd(workdir, overrides: dict, devices=1, sleep=0.0, extra=()):
    return [sys.executable, DRIVER, str(workdir), json.dumps(overrides), "--devices",
            str(devices), "--sleep", str(sleep), *extra]


def run_driver(workdir, overrides: dict, devices=1, sleep=0.0, timeout=300, check=True,
               signal_retries=0):
    """Run the training driver in a process of its own.  ``signal_retries``: a run killed
    by a signal is started afresh (its workdir removed) up to that many more times."""
    for attempt in range(signal_retries + 1):
        # faulthandler: a driver killed by a signal leaves its Python stack in stderr.
        proc = subprocess.run(driver_cmd(workdir, overrides, devices, sleep),
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        if proc.returncode >= 0 or attempt == signal_retries:
            break
        shutil.rmtree(workdir, ignore_errors=True)
    if check and proc.returncode != 0:
        # XLA's fatal and error log lines come before the Python stacks of every thread,
        # which fill the tail, so they are quoted on their own.
        xla_log = [line for line in proc.stderr.splitlines() if re.match(r"[FE]\d{4} ", line)]
        raise AssertionError(f"driver failed ({proc.returncode}):\n"
                             + "\n".join(xla_log[-10:]) + f"\n...\n{proc.stderr[-3000:]}")
    return proc


TINY = {"model": "test_cnn", "dataset.source": "bundled", "dataset.train_size": 256,
        "batch_size": 32, "learning_rate": 0.05, "log_every_steps": 1,
        "checkpoint_every_steps": 2, "eval_every_steps": 4, "num_train_steps": 8}


def run_processes(cmds, logs, timeout=300, **popen_kwargs) -> tuple[list[int], list[str]]:
    """Start every command at once (the processes of one multi-process job), each writing to
    its log file rather than a pipe (a full pipe would stall a collective), wait for all and
    return their exit statuses and outputs; none is left running.  A job still running after
    ``timeout`` seconds is an AssertionError quoting each process's log, which ends with the
    Python stack of every thread of the processes that were still running (faulthandler,
    dumped on the SIGABRT sent to them before they are killed)."""
    popen_kwargs["env"] = {**popen_kwargs.get("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    procs = []
    for cmd, log in zip(cmds, logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          **popen_kwargs))
    hung = []
    try:
        for p in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = [i for i, p in enumerate(procs) if p.poll() is None]
        for i in hung:
            procs[i].send_signal(signal.SIGABRT)
        for i in hung:
            try:
                procs[i].wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in procs:
            p.kill()
    outs = []
    for log in logs:
        with open(log) as f:
            outs.append(f.read())
    if hung:
        raise AssertionError(
            f"processes {hung} of {len(procs)} still running after {timeout} s:\n" + "\n".join(
                f"---- process {i} ----\n{out[-6000:]}" for i, out in enumerate(outs)))
    return [p.returncode for p in procs], outs
