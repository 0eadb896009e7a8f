"""What makes a run the same run: the keys a rerun in the same workdir may not change.

A workdir's ``config.json`` holds the config in effect plus ``_history``, one entry per start
(``{"time", "event", "changes"}``).  Rerunning in a used workdir compares the new config with
that record before anything is loaded or compiled, when the workdir holds a checkpoint:

* a change to a key that defines the run (model, data, batch size, seed, optimizer, schedule,
  augmentation, loss, dtype, ...) is an error naming every such key with its old and new
  value -- resuming would silently splice two different runs;
* a change to a key in :data:`MAY_CHANGE` (longer training, logging, checkpoint and
  evaluation settings, workers, profiling) is allowed and recorded in ``_history``;
* ``config.restart=True`` starts afresh: everything the workdir held is moved (never
  deleted) into ``WORKDIR/replaced-<UTC time>/``.

Every checkpoint's meta also records :func:`fingerprint` of the run's identity, so a
checkpoint copied in from another run is refused at restore.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil

# Keys a resumed run may change.  Everything else (including keys added later) defines the
# run.  Note: num_train_steps / num_epochs set the schedule's length, so a longer run's
# learning-rate schedule is stretched from the step it resumes at.
MAY_CHANGE = frozenset({
    "num_train_steps", "num_epochs", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "max_to_keep", "async_checkpoint", "eval_batch_size",
    "eval_crops", "eval_with_ema", "dataset.workers", "dataset.prefetch", "profile_steps",
    "max_consecutive_nonfinite", "init_from", "restart", "kernels.conv", "kernels.attention",
    "kernels.cpu_conv_library", "kernels.conv_precision"})

HISTORY_KEY = "_history"
RECORD = "config.json"


class RunMismatch(ValueError):
    """A rerun in a used workdir changes keys that define the run."""


def flat_config(config) -> dict:
    """The config as ``{dotted key: JSON value}`` (tuples as lists)."""
    return _flatten(json.loads(config.to_json_best_effort()))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k == HISTORY_KEY:
            continue
        if isinstance(v, dict) and not (prefix + k == "model_kwargs"):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def identity(config) -> dict:
    return {k: v for k, v in flat_config(config).items() if k not in MAY_CHANGE}


def fingerprint(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict, new: dict, defaults: dict | None = None) -> dict:
    """``{key: (old, new)}`` for every key whose value differs; a key missing from ``old``
    (written before the key existed) counts as its default."""
    defaults = defaults or {}
    out = {}
    for k in sorted(set(old) | set(new)):
        o = old.get(k, defaults.get(k))
        n = new.get(k, defaults.get(k))
        if o != n:
            out[k] = (o, n)
    return out


def describe(diffs: dict) -> str:
    return "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in diffs.items())


def read_record(workdir: str) -> dict | None:
    path = os.path.join(workdir, RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise RunMismatch(f"{path} is not valid JSON ({e}); it records the run this "
                              f"workdir holds. Repair it, or pass --config.restart=True to "
                              f"start afresh (the old files are moved aside)") from e


def used(workdir: str) -> bool:
    """Whether the workdir holds a checkpoint a rerun would resume from."""
    ck = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ck) and any(n.isdigit() for n in os.listdir(ck))


def move_aside(workdir: str) -> str | None:
    """Move everything a previous run left in ``workdir`` into ``replaced-<time>/``."""
    names = [n for n in os.listdir(workdir)
             if not n.startswith("replaced-") and n != ".lock"] if os.path.isdir(workdir) else []
    if not names:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = os.path.join(workdir, f"replaced-{stamp}")
    os.makedirs(dest)
    for n in names:
        shutil.move(os.path.join(workdir, n), os.path.join(dest, n))
    return dest


def check_and_record(config, workdir: str, log=print, write: bool = True) -> dict:
    """Compare ``config`` with the workdir's record, then write the record.

    Returns the allowed changes ``{key: (old, new)}`` (empty for a new run).  Raises
    :class:`RunMismatch` before anything is written when a key that defines the run changed.
    """
    from jaxvision.config import default_config
    defaults = flat_config(default_config())
    if config.restart and used(workdir) and write:
        dest = move_aside(workdir)
        if dest:
            log(f"restart=True: the previous run's files were moved to {dest}")
    # without a checkpoint there is nothing to resume, so nothing to compare with: the run
    # starts from scratch and its record starts afresh
    record = read_record(workdir) if used(workdir) else None
    new = flat_config(config)
    history, changes = [], {}
    if record is not None:
        old = _flatten(record)
        history = list(record.get(HISTORY_KEY, []))
        diffs = differences(old, new, defaults)
        bad = {k: v for k, v in diffs.items() if k not in MAY_CHANGE}
        if bad:
            raise RunMismatch(
                f"{workdir} holds a run with another configuration; changed: {describe(bad)}. "
                f"These keys define the run, so resuming with them changed would splice two "
                f"different runs. Use another workdir, restore the old values, or pass "
                f"--config.restart=True to start afresh (the old files are moved aside)")
        changes = {k: v for k, v in diffs.items() if k != "restart"}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entry = {"time": now, "event": "resume" if record is not None else "start"}
    if changes:
        entry["changes"] = {k: {"old": o, "new": n} for k, (o, n) in changes.items()}
        log(f"Changed since the last start of this run: {describe(changes)}")
    history.append(entry)
    if not write:
        return changes
    out = json.loads(config.to_json_best_effort())
    out[HISTORY_KEY] = history
    path = os.path.join(workdir, RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(path + ".tmp", path)
    return changes
