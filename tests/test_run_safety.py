"""Runs that never lie: each finding of the run-safety review, replayed, ends in a clear error
or the correct result (resume checks, verified checkpoints with fallback, the workdir lock,
Ctrl-C, strict data, range-checked settings, failures inside orbax, read-only workdirs).

One tiny reference run (test_cnn, 6 steps, checkpoints at 2, 4, 6) is trained once per
module; tests work on copies of it.
"""
import errno
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxvision import checkpoint as ckpt
from jaxvision import evaluate, train
from jaxvision.data.sources import DataError, load_idx
from jaxvision.run_identity import RunMismatch
from jaxvision.runlock import WorkdirBusy, WorkdirLock
from tests.helpers import read_metrics, tiny_config, train_losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def compile_counter(monkeypatch):
    """Records every train step that gets built (there must be none on refused input)."""
    calls = []
    original = train.make_train_step

    def recording(*a, **k):
        calls.append(1)
        return original(*a, **k)
    monkeypatch.setattr(train, "make_train_step", recording)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished 6-step run: checkpoints at steps 2, 4 and 6 (the newest three)."""
    wd = tmp_path_factory.mktemp("reference")
    train.train_and_evaluate(tiny_config(), str(wd))
    return wd


def copy_run(reference, dest, keep_steps=None):
    shutil.copytree(reference, dest)
    if keep_steps is not None:
        for name in os.listdir(dest / "checkpoints"):
            if int(name) not in keep_steps:
                shutil.rmtree(dest / "checkpoints" / name)
    return dest


def final_params(workdir):
    _, _, variables = evaluate.load_run(str(workdir))
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)}


def assert_same_run(a, b):
    assert train_losses(a) == train_losses(b)
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


# ---- 1. resume compares the config --------------------------------------------------------

def test_resume_refuses_a_changed_run_before_compiling(reference, tmp_path, compile_counter):
    wd = copy_run(reference, tmp_path / "w")
    record = (wd / "config.json").read_text()
    cfg = tiny_config(num_train_steps=10, batch_size=64, seed=5, learning_rate=0.5)
    with pytest.raises(RunMismatch) as e:
        train.train_and_evaluate(cfg, str(wd))
    msg = str(e.value)
    for key, old, new in (("batch_size", 32, 64), ("seed", 0, 5), ("learning_rate", 0.05, 0.5)):
        assert f"{key}: {old!r} -> {new!r}" in msg, msg
    assert "num_train_steps" not in msg  # longer training is allowed
    assert not compile_counter
    assert (wd / "config.json").read_text() == record  # the record is untouched


def test_allowed_changes_are_recorded_and_restart_moves_aside(reference, tmp_path):
    wd = copy_run(reference, tmp_path / "w")
    train.train_and_evaluate(tiny_config(num_train_steps=8, log_every_steps=2), str(wd))
    saved = json.loads((wd / "config.json").read_text())
    assert saved["num_train_steps"] == 8
    last = saved["_history"][-1]
    assert last["event"] == "resume"
    assert last["changes"] == {"num_train_steps": {"old": 6, "new": 8},
                               "log_every_steps": {"old": 1, "new": 2}}
    assert sorted(train_losses(wd)) == list(range(1, 9))  # each step once
    # starting afresh needs the flag, and keeps what was there
    train.train_and_evaluate(tiny_config(seed=1, num_train_steps=2, restart=True), str(wd))
    aside = [n for n in os.listdir(wd) if n.startswith("replaced-")]
    assert len(aside) == 1
    assert sorted(os.listdir(wd / aside[0] / "checkpoints")) == ["4", "6", "8"]
    assert sorted(train_losses(wd)) == [1, 2]
    assert [h["event"] for h in json.loads((wd / "config.json").read_text())["_history"]] == [
        "start"]


# ---- 2. verified checkpoints ----------------------------------------------------------------

def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[:len(data) // 2]
    open(path, "wb").write(bytes(data))


def test_every_file_of_a_checkpoint_is_verified(reference, tmp_path):
    """A flipped byte or a truncation in any file of a step fails its manifest."""
    step = reference / "checkpoints" / "6"
    ckpt.verify(str(step))
    files = [os.path.relpath(os.path.join(r, n), step) for r, _, ns in os.walk(step)
             for n in ns]
    assert len(files) >= 8 and any("ocdbt" in f for f in files), files
    assert ckpt.MANIFEST in files  # the manifest itself is covered too
    for i, rel in enumerate(files):
        for how in ("flip", "truncate"):
            copy = tmp_path / f"{i}{how}"
            shutil.copytree(step, copy)
            if os.path.getsize(copy / rel) == 0:
                continue
            _damage(copy / rel, how)
            expect = "manifest|file" if rel == ckpt.MANIFEST else rel.split("/")[-1]
            with pytest.raises(ckpt.CheckpointCorrupt, match=expect):
                ckpt.verify(str(copy))
    copy = tmp_path / "nocommit"
    shutil.copytree(step, copy)
    os.remove(copy / "commit_success.txt")
    with pytest.raises(ckpt.CheckpointCorrupt, match="commit_success.txt is missing"):
        ckpt.verify(str(copy))


@pytest.mark.parametrize("how,target", [("flip", "ocdbt"), ("truncate", "meta/metadata")])
def test_damaged_newest_checkpoint_falls_back_bit_identically(reference, tmp_path, how,
                                                              target, capsys):
    """The newest checkpoint (step 4 of a run stopped there) is damaged: the rerun reports
    it, moves it aside, resumes from step 2 and ends identical to the uninterrupted run."""
    wd = copy_run(reference, tmp_path / "w", keep_steps={2, 4})
    rows = [json.dumps(r) for r in read_metrics(wd) if r["step"] <= 4]
    (wd / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    step4 = wd / "checkpoints" / "4"
    files = sorted(os.path.join(r, n) for r, _, ns in os.walk(step4) for n in ns
                   if target in os.path.join(r, n))
    _damage(max(files, key=os.path.getsize), how)
    train.train_and_evaluate(tiny_config(), str(wd))
    out = capsys.readouterr().out
    assert "Checkpoint step 4" in out and "is unusable" in out
    assert "Resumed from" in out and out.split("Resumed from")[1].split()[0].endswith("/2")
    assert len(os.listdir(wd / "checkpoints-set-aside")) == 1
    assert_same_run(wd, reference)


def test_no_usable_checkpoint_is_one_error_and_moves_nothing(reference, tmp_path):
    wd = copy_run(reference, tmp_path / "w", keep_steps={4, 6})
    for s in (4, 6):
        os.remove(wd / "checkpoints" / str(s) / "meta" / "metadata")
    with pytest.raises(ckpt.CheckpointError, match=r"no usable checkpoint .*step 6: file "
                                                   r"meta/metadata is missing; step 4: file"):
        train.train_and_evaluate(tiny_config(), str(wd))
    assert sorted(os.listdir(wd / "checkpoints")) == ["4", "6"]


# ---- 3. one writer per workdir --------------------------------------------------------------

def test_second_trainer_fails_at_once_naming_the_holder(tmp_path, compile_counter):
    with WorkdirLock(str(tmp_path)):
        with pytest.raises(WorkdirBusy, match=rf"in use by another trainer \(pid {os.getpid()} "
                                              rf"on host "):
            train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert not compile_counter


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from jaxvision.runlock import WorkdirLock; WorkdirLock(sys.argv[2]).acquire();"
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, REPO, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirBusy, match=f"pid {proc.pid}"):
        WorkdirLock(str(tmp_path)).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    WorkdirLock(str(tmp_path)).acquire().release()  # free again


def test_fresh_start_cuts_a_stale_metrics_log(tmp_path):
    """A run killed before its first checkpoint left rows; the rerun logs each step once."""
    stale = [json.dumps({"step": s, "train_loss": 9.0}) for s in range(1, 91)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(stale) + "\n")
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    assert sorted(train_losses(tmp_path)) == [1, 2]
    assert all(v != 9.0 for v in train_losses(tmp_path).values())


# ---- 4. signals -----------------------------------------------------------------------------

def _cli(workdir, *extra):
    # the config by name, as after a non-editable install (jaxvision/experiment_configs.py)
    return [sys.executable, "-m", "jaxvision.train", "--config", "mnist_cnn", "--workdir",
            str(workdir), "--config.model=test_cnn", "--config.dataset.train_size=256",
            "--config.batch_size=32", "--config.log_every_steps=1", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_130_and_early_signals_exit_with_status(tmp_path):
    wd = tmp_path / "w"
    # SIGINT in the loop: checkpoint at the current step, status 130
    cmd = [sys.executable, os.path.join(REPO, "tests", "train_driver.py"), str(wd),
           json.dumps({"model": "test_cnn", "dataset.train_size": 256, "batch_size": 32,
                       "log_every_steps": 1, "num_train_steps": 200,
                       "checkpoint_every_steps": 50}), "--sleep", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    deadline = time.time() + 600
    while time.time() < deadline and not (wd / "metrics.jsonl").exists():
        time.sleep(0.05)
    assert (wd / "metrics.jsonl").exists(), "the run did not start training in 10 minutes"
    time.sleep(0.6)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "KeyboardInterrupt" not in out
    assert "overriding jax.Array" not in out  # orbax's notice of our own registration
    steps = sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit())
    assert steps and steps[-1] == max(train_losses(wd)) < 200
    assert f"Interrupted (SIGINT): checkpoint written at step {steps[-1]}" in out
    # SIGTERM before the loop (the run is setting up): status 75 and a message
    early = tmp_path / "early"
    proc = subprocess.Popen(_cli(early, "--config.num_train_steps=4"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env())
    deadline = time.time() + 180
    while time.time() < deadline and not early.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-2000:]
    assert "SIGTERM received" in out and "rerun the command" in out, out[-2000:]
    assert not (early / "checkpoints").exists() or not os.listdir(early / "checkpoints")


# ---- 5. strict data -------------------------------------------------------------------------

def _write_idx(folder, images, labels, code=0x08, label_code=0x08):
    os.makedirs(folder, exist_ok=True)
    dt = {0x08: np.uint8, 0x0B: ">i2", 0x0D: ">f4"}
    with gzip.open(os.path.join(folder, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, code, 3) + struct.pack(">3I", *images.shape))
        f.write(np.asarray(images, dt[code]).tobytes())
    with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, label_code, 1) + struct.pack(">I", len(labels)))
        f.write(np.asarray(labels, dt[label_code]).tobytes())


def test_signals_after_a_completed_run_leave_status_0():
    """Once a run is complete (the command line and the test driver call
    ``ignore_after_completion`` when train_and_evaluate returns), SIGINT and SIGTERM during
    shut-down neither kill the process nor print the start-up message."""
    code = ("import os, signal\n"
            "from jaxvision.preemption import ignore_after_completion\n"
            "{}\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('done', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code.format("ignore_after_completion()")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "done", ""), proc
    # without it, the first signal ends the process by its default action
    proc = subprocess.run([sys.executable, "-c", code.format("pass")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "done" not in proc.stdout


def test_idx_data_is_never_cast_silently(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    _write_idx(tmp_path / "f32", rng.random((40, 28, 28)), labels, code=0x0D)
    with pytest.raises(DataError, match=r"images are float32, but IDX images must be uint8"):
        load_idx(str(tmp_path / "f32"))
    _write_idx(tmp_path / "i16", rng.integers(-300, 300, (40, 28, 28)), labels, code=0x0B)
    with pytest.raises(DataError, match=r"images are int16"):
        load_idx(str(tmp_path / "i16"))
    _write_idx(tmp_path / "flab", np.zeros((40, 28, 28)), labels, label_code=0x0D)
    with pytest.raises(DataError, match=r"labels are float32, but must be integers"):
        load_idx(str(tmp_path / "flab"))
    stray = labels.copy()
    stray[7] = 255
    _write_idx(tmp_path / "stray", np.zeros((40, 28, 28)), stray)
    with pytest.raises(DataError, match=r"cannot infer the number of classes: 245 of the classes "
                                        r"0..255 have no example .*largest label is 255.*"
                                        r"num_classes"):
        load_idx(str(tmp_path / "stray"))
    assert load_idx(str(tmp_path / "stray"), num_classes=256)["train"].num_classes == 256
    _write_idx(tmp_path / "empty", np.zeros((0, 28, 28)), np.zeros(0))
    with pytest.raises(DataError, match=r"holds no images"):
        load_idx(str(tmp_path / "empty"))
    _write_idx(tmp_path / "ok", np.zeros((40, 28, 28)), labels)
    assert load_idx(str(tmp_path / "ok"))["train"].num_classes == 10


# ---- 6. range-checked settings: see tests/test_bad_input_doc.py (walks docs/bad-input.md) --

def test_dtype_aliases_are_accepted(tmp_path):
    from jaxvision.config import validate
    cfg = tiny_config(dtype="bf16")
    validate(cfg)
    assert cfg.dtype == "bfloat16"


# ---- 7. failures inside orbax, full disks ---------------------------------------------------

def test_full_disk_fails_at_that_save_keeping_the_previous(tmp_path, monkeypatch):
    real = ckpt._free_bytes
    calls = []

    def free(directory):
        calls.append(directory)
        return 1000 if len(calls) >= 2 else real(directory)  # the second save finds it full
    monkeypatch.setattr(ckpt, "_free_bytes", free)
    with pytest.raises(ckpt.CheckpointError,
                       match=r"not enough disk space to save checkpoint step 4 in .*/checkpoints: "
                             r"it needs about [\d,]+ bytes and 1,000 are free; the previous "
                             r"checkpoint \(step 2\) is intact"):
        train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["2"]
    ckpt.verify(str(tmp_path / "checkpoints" / "2"))
    assert max(train_losses(tmp_path)) == 4  # stopped at the failed save, not an interval later


def test_write_error_inside_orbax_is_a_checkpoint_error(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp
    original = ocp.JsonCheckpointHandler.async_save
    saves = []

    async def failing(self, directory, *a, **k):
        saves.append(directory)
        if len(saves) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, directory, *a, **k)
    monkeypatch.setattr(ocp.JsonCheckpointHandler, "async_save", failing)
    with pytest.raises(ckpt.CheckpointError, match=r"saving checkpoint step 4 in .* failed "
                                                   r"\(.*No space left on device.*free\); the "
                                                   r"previous checkpoint \(step 2\) is intact"):
        train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["2"]  # no temporary folder left
    ckpt.verify(str(tmp_path / "checkpoints" / "2"))


@pytest.mark.slow
def test_command_line_errors_end_with_the_cause(reference, tmp_path):
    """A wrong model on resume and an unreadable checkpoint: the cause is the last line,
    without tracebacks from orbax's threads."""
    wd = copy_run(reference, tmp_path / "w")
    proc = subprocess.run(_cli(wd, "--config.model=test_alexnet", "--config.num_train_steps=6"),
                          capture_output=True, text=True, env=_env(), timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert last.startswith("Error: RunMismatch:") and "model: 'test_cnn' -> 'test_alexnet'" in last
    assert "Event loop is closed" not in proc.stderr and "Traceback" not in proc.stderr


# ---- 8. read-only workdirs ------------------------------------------------------------------

def _tree(path):
    return sorted((os.path.relpath(os.path.join(r, n), path),
                   os.stat(os.path.join(r, n)).st_size, os.stat(os.path.join(r, n)).st_mtime_ns)
                  for r, ds, ns in os.walk(path) for n in ns + ds)


def test_read_only_workdir_can_be_evaluated(reference, tmp_path):
    wd = copy_run(reference, tmp_path / "w")
    before = _tree(wd)
    for r, ds, ns in os.walk(wd):
        for n in ns + ds:
            os.chmod(os.path.join(r, n), 0o555 if n in ds else 0o444)
    os.chmod(wd, 0o555)
    try:
        out = evaluate.ensemble([str(wd)])
    finally:
        for r, ds, ns in os.walk(wd):
            os.chmod(r, 0o755)
    assert out["count"] == 1000 and 0 <= out["ensemble_accuracy"] <= 1
    assert _tree(wd) == before  # nothing written (also when run as root)


# ---- the documented list of rejected inputs (docs/bad-input.md) -----------------------------

_HELD = []  # locks a case holds while the trainer is refused


def documented_bad_inputs():
    rows = []
    with open(os.path.join(REPO, "docs", "bad-input.md")) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[1].startswith("`") and cells[2].startswith("`"):
                rows.append(pytest.param(cells[1].strip("`"), cells[2].strip("`"),
                                         id=cells[0]))
    return rows


def _prepare_case(case, tmp_path, reference, stack):
    """(config, workdir) for one documented case."""
    wd = tmp_path / "w"
    if case.startswith("{"):
        return tiny_config(**json.loads(case)), wd
    kind, name = case.split(":")
    if kind == "idx":
        labels = np.arange(40) % 10
        args = {"float32-images": (np.full((40, 28, 28), 0.5), labels, 0x0D, 0x08),
                "int16-images": (np.full((40, 28, 28), 300), labels, 0x0B, 0x08),
                "float32-labels": (np.zeros((40, 28, 28)), labels, 0x08, 0x0D),
                "stray-label": (np.zeros((40, 28, 28)), np.where(np.arange(40) == 3, 255,
                                                                 labels), 0x08, 0x08),
                "empty": (np.zeros((0, 28, 28)), np.zeros(0), 0x08, 0x08),
                "label-out-of-range": (np.zeros((40, 28, 28)), labels + 1, 0x08, 0x08)}[name]
        _write_idx(tmp_path / "data", *args[:2], code=args[2], label_code=args[3])
        over = {"dataset.source": "idx", "dataset.path": str(tmp_path / "data"),
                "dataset.validation_size": 8}
        if name == "label-out-of-range":
            over["num_classes"] = 10
        return tiny_config(**over), wd
    if name == "disk-full":
        stack.setattr(ckpt, "_free_bytes", lambda d: 0)
        return tiny_config(), wd
    if name == "init-from-other-architecture":
        cfg = tiny_config(init_from=str(reference))
        cfg.model_kwargs.hidden = 24  # the reference's test_cnn has 16
        return cfg, wd
    copy_run(reference, wd)
    if name == "changed-run":
        return tiny_config(batch_size=64), wd
    if name == "locked":
        _HELD.append(WorkdirLock(str(wd)).acquire())
        return tiny_config(), wd
    if name == "no-usable-checkpoint":
        for s in os.listdir(wd / "checkpoints"):
            os.remove(wd / "checkpoints" / s / "meta" / "metadata")
        return tiny_config(), wd
    raise AssertionError(f"unknown documented case {case!r}")


@pytest.mark.parametrize("case,message", documented_bad_inputs())
def test_documented_bad_inputs_are_rejected(case, message, tmp_path, reference, monkeypatch):
    calls = []
    original = train.make_train_step
    monkeypatch.setattr(train, "make_train_step", lambda *a, **k: calls.append(1) or original(
        *a, **k))
    cfg, wd = _prepare_case(case, tmp_path, reference, monkeypatch)
    try:
        with pytest.raises(Exception) as e:
            train.train_and_evaluate(cfg, str(wd))
    finally:
        while _HELD:
            _HELD.pop().release()
    assert message in str(e.value), str(e.value)
    # a full disk is found at the first save, by design; a checkpoint is verified at restore,
    # after the step function is built but before jit compiles it (at its first call), and
    # so is the source of a fresh start's init_from
    if case not in ("workdir:disk-full", "workdir:no-usable-checkpoint",
                    "workdir:init-from-other-architecture"):
        assert not calls


def test_the_documented_list_is_complete():
    cases = [p.values[0] for p in documented_bad_inputs()]
    assert len(cases) >= 30
    assert {"workdir:changed-run", "workdir:locked", "idx:empty"} <= set(cases)
