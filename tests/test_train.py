"""End-to-end training: a short run, resume after SIGKILL, device counts, BN groups, hosts."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision import train
from tests.helpers import (TINY, driver_cmd, read_metrics, run_driver, run_processes,
                           tiny_config, train_losses)


def test_two_step_run_writes_workdir(tmp_path):
    cfg = tiny_config(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2)
    result = train.train_and_evaluate(cfg, str(tmp_path))
    assert set(result) == {"eval_loss", "eval_accuracy", "eval_count"}
    assert result["eval_count"] == 1000  # every bundled validation digit, none twice
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "train_loss" in r]
    eval_rows = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all({"step", "train_loss", "learning_rate"} <= set(r) for r in train_rows)
    assert eval_rows and {"step", "eval_loss", "eval_accuracy"} <= set(eval_rows[0])
    recorded = json.load(open(tmp_path / "config.json"))
    assert recorded["model"] == "test_cnn"
    # the kernels the run traced with, resolved (not '') so that the record says what ran
    from jaxvision import kernels
    assert recorded["kernels"] == kernels.in_effect()
    assert set(recorded["kernels"].values()) <= {*kernels.CONV_IMPLS, *kernels.CONV_PRECISIONS,
                                                 *kernels.ATTENTION_IMPLS,
                                                 *kernels.LIBRARIES} - {""}
    assert os.listdir(tmp_path / "checkpoints") == ["2"]
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def test_rerun_resumes_instead_of_restarting(tmp_path):
    train.train_and_evaluate(tiny_config(num_train_steps=4), str(tmp_path))
    first = train_losses(tmp_path)
    train.train_and_evaluate(tiny_config(num_train_steps=6), str(tmp_path))
    both = train_losses(tmp_path)
    assert sorted(both) == [1, 2, 3, 4, 5, 6]
    assert all(both[s] == first[s] for s in first)  # steps 1-4 were not rerun


# That training learns: tests/test_readme_commands.py runs the default experiment (README's
# command) to completion and checks its held-out accuracy figure.


@pytest.mark.slow
def test_sigkill_after_second_checkpoint_resumes_bit_identically(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_driver(ref, TINY)
    proc = subprocess.Popen(driver_cmd(killed, TINY, sleep=0.3), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = killed / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [d for d in (os.listdir(ckdir) if ckdir.exists() else []) if d.isdigit()]
        if len(done) >= 2:
            break
        assert proc.poll() is None, "the run ended before its second checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = train_losses(killed) if (killed / "metrics.jsonl").exists() else {}
    assert len(done) >= 2, os.listdir(killed)
    assert max(partial, default=0) < TINY["num_train_steps"], "the run ended before the kill"
    run_driver(killed, TINY)
    assert train_losses(killed) == train_losses(ref)


def _rows_with(workdir, key):
    return [r for r in read_metrics(workdir) if key in r]


@pytest.mark.slow
def test_sigterm_checkpoints_exits_75_and_rerun_equals_uninterrupted_run(tmp_path):
    """SIGTERM between two log flushes: exit 75 with a checkpoint at the step it stopped and
    every metric row up to that step written; the rerun then finishes step for step as an
    uninterrupted run (losses, evaluations, final parameters) with each row present once."""
    from jaxvision import checkpoint as ckpt
    cfg = dict(TINY, num_train_steps=16, log_every_steps=8, checkpoint_every_steps=8,
               eval_every_steps=8, **{"dataset.source": "synthetic"})
    ref, run = tmp_path / "ref", tmp_path / "run"
    run_driver(ref, cfg)
    proc = subprocess.Popen(driver_cmd(run, cfg, sleep=0.5),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (run / "metrics.jsonl").exists() and _rows_with(run, "eval_loss")):
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        time.sleep(0.05)
    time.sleep(1.0)  # a few steps past the flush at step 8: their rows are not written yet
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == train.PREEMPTED_EXIT_CODE, out[-2000:]
    assert "Preempted" in out
    stopped = max(int(d) for d in os.listdir(run / "checkpoints") if d.isdigit())
    assert 8 <= stopped < cfg["num_train_steps"], "the run ended before SIGTERM"
    # a checkpoint at the step it stopped, and the rows of every step before it
    assert [r["step"] for r in read_metrics(run) if "train_loss" in r] == list(
        range(1, stopped + 1))
    run_driver(run, cfg)

    def rows(workdir, key):
        return [{k: v for k, v in r.items() if k != "img_per_s"}
                for r in read_metrics(workdir) if key in r]
    for key in ("train_loss", "eval_loss"):
        got, want = rows(run, key), rows(ref, key)
        assert [r["step"] for r in got] == [r["step"] for r in want]  # each step once
        assert got == want
    assert [r["step"] for r in rows(ref, "eval_loss")] == [8, 16]
    a, _ = ckpt.restore_variables(str(run))
    b, _ = ckpt.restore_variables(str(ref))
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_losses(tmp_path):
    cfg = dict(TINY, num_train_steps=4)
    run_driver(tmp_path / "d1", cfg, devices=1)
    run_driver(tmp_path / "d8", cfg, devices=8)
    a, b = train_losses(tmp_path / "d1"), train_losses(tmp_path / "d8")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_process(tmp_path):
    cfg = dict(TINY, num_train_steps=4)
    run_driver(tmp_path / "single", cfg, devices=8)
    port = _free_port()
    # Each process writes to its own file, not a pipe: reading one pipe while the other
    # process fills its own (XLA logs slow collectives under load) would block that process
    # inside a collective and with it both.
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    codes, outs = run_processes(
        [driver_cmd(tmp_path / "multi", cfg, devices=4,
                    extra=("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                           "--process-id", str(i))) for i in range(2)],
        logs, text=True)
    assert codes == [0, 0], "\n".join(o[-2000:] for o in outs)
    a, b = train_losses(tmp_path / "single"), train_losses(tmp_path / "multi")
    assert sorted(a) == sorted(b)
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-5)


def test_multi_process_checkpoints_use_the_clients_barrier(monkeypatch):
    """A multi-process run's orbax barriers go through the JAX distributed client, not a psum
    run beside the evaluation's collectives (jaxvision.checkpoint); a single process leaves
    orbax's setting alone."""
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost

    from jaxvision import checkpoint
    flag = flags.FLAGS[multihost.EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER.name]
    monkeypatch.setattr(flag, "value", False)
    monkeypatch.setattr(flag, "present", 0)
    checkpoint._barriers_without_device_programs()
    assert flag.value is False
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    checkpoint._barriers_without_device_programs()
    assert multihost.EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER.value is True


def test_bn_group_size_uses_per_group_statistics():
    """apply_train with groups equals running the model on each group separately."""
    model = jaxvision.create_model("test_cnn", dropout_rate=0.0)
    x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
    targets = jax.nn.one_hot(jnp.arange(8) % 10, 10)
    variables = model.init(jax.random.key(1), x[:1])
    params, stats = variables["params"], variables["batch_stats"]
    logits, new_stats, _ = train.apply_train(model, params, stats, x, targets,
                                             jax.random.key(2), bn_group_size=2)
    per_group = [model.apply({"params": params, "batch_stats": stats}, x[i:i + 2], train=True,
                             mutable=["batch_stats"]) for i in range(0, 8, 2)]
    np.testing.assert_allclose(logits, jnp.concatenate([g[0] for g in per_group]),
                               rtol=1e-5, atol=1e-5)
    expected = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), 0),
                            *[g[1]["batch_stats"] for g in per_group])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 new_stats, expected)
    # and differs from global statistics
    glob, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                          mutable=["batch_stats"])
    assert not np.allclose(glob, logits, atol=1e-4)


def test_nonfinite_updates_are_skipped_and_stop_the_run(tmp_path):
    cfg = tiny_config(num_train_steps=8, learning_rate=1e30, max_consecutive_nonfinite=3,
                      checkpoint_every_steps=1)
    with pytest.raises(train.NonFiniteError, match=r"steps \d+\.\.\d+.*last finite checkpoint"):
        train.train_and_evaluate(cfg, str(tmp_path))
    rows = [r for r in read_metrics(tmp_path) if "skipped" in r]
    assert any(r["skipped"] for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("saved_on,restored_on", [(8, (1, 2, 4)), (1, (8,))])
def test_checkpoint_restores_on_other_device_counts(tmp_path, saved_on, restored_on):
    """Shardings are supplied at restore time, so N-device checkpoints load on M devices."""
    # a constant schedule, so that stopping at 4 of 6 steps does not change the rates
    cfg4 = dict(TINY, num_train_steps=4, schedule="constant")
    cfg6 = dict(TINY, num_train_steps=6, schedule="constant")
    run_driver(tmp_path / "ref", cfg6, devices=saved_on)
    run_driver(tmp_path / "saved", cfg4, devices=saved_on)
    a = train_losses(tmp_path / "ref")
    for n in restored_on:
        moved = tmp_path / f"moved{n}"
        shutil.copytree(tmp_path / "saved", moved)
        proc = run_driver(moved, cfg6, devices=n)
        assert "Resumed from" in proc.stdout, n
        b = train_losses(moved)
        assert sorted(a) == sorted(b) == list(range(1, 7)), n
        np.testing.assert_allclose([b[s] for s in range(1, 7)], [a[s] for s in range(1, 7)],
                                   rtol=1e-5, err_msg=f"{saved_on} -> {n} devices")


def test_nan_through_the_loss_skips_only_those_updates(tmp_path, monkeypatch):
    """A loss that is NaN for every batch holding a '3': those updates are skipped (state
    unchanged), the others train, and the run finishes."""
    from jaxvision import losses

    def nan_on_three(logits, targets):
        ce = losses.cross_entropy(logits, targets)
        return jnp.where(targets[:, 3] > 0.5, jnp.nan, ce)

    monkeypatch.setitem(losses.LOSSES, "nan_on_three", nan_on_three)
    cfg = tiny_config(loss="nan_on_three", batch_size=8, num_train_steps=12,
                      max_consecutive_nonfinite=100, checkpoint_every_steps=12,
                      eval_every_steps=12)
    train.train_and_evaluate(cfg, str(tmp_path))
    rows = [r for r in read_metrics(tmp_path) if "skipped" in r]
    skipped = [r["step"] for r in rows if r["skipped"]]
    assert 0 < len(skipped) < 12
    assert all(np.isnan(r["train_loss"]) for r in rows if r["skipped"])
    assert all(np.isfinite(r["train_loss"]) for r in rows if not r["skipped"])


def test_skipped_update_leaves_the_state_unchanged():
    model = jaxvision.create_model("test_cnn")
    cfg = tiny_config()
    x = jnp.zeros((8, 28, 28, 1), jnp.uint8)
    variables = model.init(jax.random.key(0), x[:1].astype(jnp.float32))
    from jaxvision import losses, optim
    tx, _ = optim.make_optimizer(cfg, variables["params"], 10, 10, 8)
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables["batch_stats"],
                             opt_state=tx.init(variables["params"]), rng=jax.random.PRNGKey(0),
                             ema_params={}, nonfinite=jnp.zeros((), jnp.int32),
                             skipped_total=jnp.zeros((), jnp.int32))
    nan_loss = lambda logits, t: jnp.full(logits.shape[:1], jnp.nan)  # noqa: E731
    step = train.make_train_step(model, tx, cfg, 10, jnp.zeros(1), jnp.ones(1), None, None,
                                 nan_loss)
    new, metrics = jax.jit(step)(state, x, jnp.zeros(8, jnp.int32))
    assert int(metrics["skipped"]) == 1 and int(new.nonfinite) == 1
    for a, b in ((new.params, state.params), (new.batch_stats, state.batch_stats),
                 (new.opt_state, state.opt_state)):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    del losses


def test_nan_through_the_data_stops_with_last_finite_checkpoint(tmp_path):
    """A zero std turns every input into inf/NaN: updates are skipped, no non-finite state is
    checkpointed, and the run stops naming the step range and the last finite checkpoint."""
    cfg = tiny_config(num_train_steps=20, max_consecutive_nonfinite=4, log_every_steps=1,
                      checkpoint_every_steps=2, **{"dataset.std": (0.0,)})
    with pytest.raises(train.NonFiniteError, match=r"steps 1\.\.4 .*no checkpoint was written|"
                                                   r"steps \d+\.\.\d+ .*last finite checkpoint"):
        train.train_and_evaluate(cfg, str(tmp_path))
    rows = [r for r in read_metrics(tmp_path) if "skipped" in r]
    assert rows and all(r["skipped"] for r in rows)


def test_profile_steps_trace_those_steps_only(tmp_path):
    """profile_steps=(1, 3) traces steps 1 and 2 into WORKDIR/profile; a bad window is
    refused before anything is written.  The traced run has a process of its own, so that
    the profiler's process-wide state stays out of this test worker."""
    import glob
    import gzip
    # One fresh retry if the driver is killed by a signal: it was once, in a loaded CI run
    # (SIGSEGV, no Python error, not seen in isolated reruns), while XLA:CPU ran under
    # jax.profiler.  A second crash fails the test with the stack faulthandler printed.
    run_driver(tmp_path / "run", {**TINY, "num_train_steps": 4, "profile_steps": [1, 3]},
               signal_retries=1)
    (trace,) = glob.glob(str(tmp_path / "run" / "profile" / "**" / "*.trace.json.gz"),
                         recursive=True)
    with gzip.open(trace, "rt") as f:
        events = json.load(f)["traceEvents"]
    # Each dispatch of the train step shows as a span (nested in a copy of itself).
    starts = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                    if e.get("ph") == "X" and e["name"] == "PjitFunction(train_step)")
    outer, end = 0, -1.0
    for s, e in starts:
        if s > end:
            outer, end = outer + 1, e
    assert outer == 2
    assert len(train_losses(tmp_path / "run")) == 4  # the run itself is unchanged
    for bad in [(3, 1), (2,), (-1, 2), ("a", "b")]:
        with pytest.raises(ValueError, match="profile_steps must be \\(start, stop\\)"):
            train.train_and_evaluate(tiny_config(profile_steps=bad), str(tmp_path / "bad"))
        assert not (tmp_path / "bad").exists()
