"""Checkpoints through orbax ``CheckpointManager`` (the only module that imports orbax).

Layout: ``<workdir>/checkpoints/<step>/{state,meta,manifest.json}``.  orbax writes each step
into a temporary directory and renames it when complete, so a process killed mid-write leaves
no half-written step behind under its final name; such leftovers are removed on the next
start.  ``state`` is the train-state pytree; ``meta`` a JSON record (data position and the
run's fingerprint, checked at restore so that a resumed run is the same run).

Once orbax has committed a step, :func:`seal` writes ``manifest.json``: the size and checksum
of every file of the step (:data:`CHECKSUM`).  Restoring verifies the manifest.  A newest
checkpoint that fails verification or restore is reported in one line and moved to
``<workdir>/checkpoints-set-aside/`` (never deleted) and the newest one that verifies is
restored instead; when none does, one :class:`CheckpointError` lists each with its cause.
Every failure inside orbax or tensorstore reaches the caller as a :class:`CheckpointError`.
"""
from __future__ import annotations

import datetime
import errno
import functools
import json
import logging
import os
import shutil
import threading
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp

try:  # crc32c where google-crc32c is installed (it comes with some tensorstore setups)
    import google_crc32c

    def _crc(data: bytes, value: int = 0) -> int:
        return google_crc32c.extend(value, data)
    CHECKSUM = "crc32c"
except ImportError:  # the standard library's CRC-32 (zlib): as strong against flipped bytes
    def _crc(data: bytes, value: int = 0) -> int:
        return zlib.crc32(data, value)
    CHECKSUM = "crc32"

MANIFEST = "manifest.json"
SET_ASIDE = "checkpoints-set-aside"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, corrupt, or does not fit the model."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint whose files do not match its manifest (or that has none)."""


class CheckpointUnsealed(CheckpointCorrupt):
    """A committed step without its manifest: its run was stopped before sealing it."""


class CheckpointMismatch(CheckpointError):
    """A sound checkpoint of another model or run."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _remove_partial(directory: str):
    """Delete leftovers of interrupted writes (orbax tmp dirs, steps without their commit)."""
    if not os.path.isdir(directory) or jax.process_index() != 0:
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if ".orbax-checkpoint-tmp" in name or name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True)


@functools.cache
def _plain_array_writes_on_cpu():
    """On CPU, write each replicated array from one replica (set once per process).

    orbax's default splits a replicated array into one slice per replica and writes the slices
    in parallel ("replica-parallel"; orbax already turns it off on GPU).  CPU devices share one
    host memory, so the split buys nothing there, and every distinct slice shape costs a
    compiled XLA program: about 25 s per save of a 100-layer network on 8 simulated devices.
    """
    if jax.default_backend() != "cpu":
        return
    from orbax.checkpoint import type_handlers
    from orbax.checkpoint._src.metadata import array_metadata_store
    handler = type_handlers.ArrayHandler(use_replica_parallel=False,
                                         array_metadata_store=array_metadata_store.Store())
    # the override is deliberate: drop orbax's one warning line about it (and only that one)
    absl_logger = logging.getLogger("absl")
    quiet = _DropMessage("Type handler registry type")
    absl_logger.addFilter(quiet)
    try:
        type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_logger.removeFilter(quiet)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _barriers_without_device_programs():
    """Multi-process runs: orbax's barriers through the JAX distributed client.

    By default orbax (0.12) implements a barrier as ``sync_global_devices``, a psum over every
    device, and its async commit thread runs one after each save while the main thread goes
    on to the next steps' collectives: two collective programs in flight at once on the same
    devices, started in either order on each process.  That is the pattern that hung a
    two-process evaluation (jaxvision.evaluate.evaluate_split); orbax's own flag selects the
    client's barrier instead (no device program, and a timeout).  It is an absl flag, set
    here whether or not a command line has been parsed (a library caller may never parse
    one)."""
    if jax.process_count() == 1:
        return
    from absl import flags
    name = "experimental_orbax_use_distributed_barrier"
    if name in flags.FLAGS:
        flags.FLAGS[name].value = True
        flags.FLAGS[name].present = 1  # readable before flags are parsed


def manager(workdir: str, max_to_keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    _plain_array_writes_on_cpu()
    _barriers_without_device_programs()
    directory = checkpoint_dir(workdir)
    _remove_partial(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        # seal each step as soon as orbax has committed it (see ``seal``); synchronous
        # saves are sealed by ``finish``
        async_options=ocp.AsyncOptions(
            post_finalization_callback=lambda: seal_committed(directory))
        if async_save else None)
    try:
        return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
    except Exception as e:
        raise CheckpointError(f"cannot open checkpoints in {directory}: {_one_line(e)}") from e


def read_only_manager(directory: str) -> ocp.CheckpointManager:
    """A manager that writes nothing (for evaluating or predicting from any workdir)."""
    _plain_array_writes_on_cpu()
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    try:
        return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
    except Exception as e:
        raise CheckpointError(f"cannot open checkpoints in {directory}: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:500]}"


# ------------------------------------------------------------------------------------------
# Manifests
# ------------------------------------------------------------------------------------------

def _files(step_dir: str):
    for root, _, names in os.walk(step_dir):
        for n in sorted(names):
            path = os.path.join(root, n)
            rel = os.path.relpath(path, step_dir)
            if rel != MANIFEST and not rel.startswith(MANIFEST + "."):
                yield rel, path


def _checksum(path: str) -> int:
    value = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            value = _crc(block, value)
    return value


def seal(step_dir: str):
    """Write ``manifest.json``: every file's size and checksum (atomically: tmp + rename)."""
    files = {rel: [os.path.getsize(p), _checksum(p)] for rel, p in _files(step_dir)}
    tmp = os.path.join(step_dir, f"{MANIFEST}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"checksum": CHECKSUM, "files": files}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def seal_committed(directory: str):
    """Seal every committed step of ``directory`` that has no manifest yet (process 0)."""
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        step_dir = os.path.join(directory, name)
        if name.isdigit() and not os.path.exists(os.path.join(step_dir, MANIFEST)):
            try:
                seal(step_dir)
            except OSError:  # a step orbax is deleting (max_to_keep) right now
                pass


def verify(step_dir: str):
    """Raise :class:`CheckpointCorrupt` unless every file matches the step's manifest."""
    path = os.path.join(step_dir, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
        files, algo = manifest["files"], manifest["checksum"]
    except FileNotFoundError:
        raise CheckpointUnsealed("no manifest: the run was stopped before sealing it") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointCorrupt(f"unreadable manifest ({_one_line(e)})") from None
    if algo != CHECKSUM:
        raise CheckpointCorrupt(f"manifest uses {algo} checksums but this install computes "
                                f"{CHECKSUM}")
    present = dict(_files(step_dir))
    for rel, (size, crc) in sorted(files.items()):
        if rel not in present:
            raise CheckpointCorrupt(f"file {rel} is missing")
        actual = os.path.getsize(present[rel])
        if actual != size:
            raise CheckpointCorrupt(f"file {rel} has {actual} bytes, {size} when written")
        if _checksum(present[rel]) != crc:
            raise CheckpointCorrupt(f"file {rel} fails its {algo} checksum (changed on disk)")
    extra = sorted(set(present) - set(files))
    if extra:
        raise CheckpointCorrupt(f"files not in its manifest: {extra[:3]}")


# ------------------------------------------------------------------------------------------
# Save
# ------------------------------------------------------------------------------------------

def _free_bytes(directory: str) -> int:
    return shutil.disk_usage(directory).free


def _state_bytes(state) -> int:
    return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)
                   if hasattr(x, "dtype")))


def finish(mngr: ocp.CheckpointManager):
    """Wait for the save in flight, seal it; its failure becomes a ``CheckpointError``."""
    try:
        mngr.wait_until_finished()
    except Exception as e:
        _remove_partial(str(mngr.directory))
        raise CheckpointError(f"saving a checkpoint in {mngr.directory} failed: "
                              f"{_one_line(e)}") from e
    seal_committed(str(mngr.directory))


def _join_writer_threads(timeout: float = 60.0):
    """Wait for the threads orbax started for a save (they outlive a failed one)."""
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon and ("handler" in t.name or "commit" in t.name
                                             or "metadata" in t.name):
            t.join(timeout)


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False) -> bool:
    """Save ``state`` at ``step``.  Fails at this save, with the previous checkpoint intact
    and no temporary folder left, when the disk is too full (or the write fails)."""
    finish(mngr)  # the previous save, so that a failure is reported before the next one
    directory = str(mngr.directory)
    # orbax writes the arrays plus some metadata: ask for the state's size and a margin
    needed = int(_state_bytes(state) * 1.1) + (1 << 20)
    free = _free_bytes(directory)
    latest = mngr.latest_step()
    kept = (f"the previous checkpoint (step {latest}) is intact" if latest is not None
            else "no earlier checkpoint exists")
    if free < needed:
        raise CheckpointError(
            f"not enough disk space to save checkpoint step {step} in {directory}: it needs "
            f"about {needed:,} bytes and {free:,} are free; {kept}")
    try:
        saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)),
                          force=force)
        seal_committed(directory)  # a synchronous save is committed by now
        return saved
    except Exception as e:
        # orbax's background writers of this step may still be running: let them end
        # before removing their temporary folder, or they recreate it
        try:
            mngr.wait_until_finished()
        except Exception:  # noqa: BLE001 -- the same failure, reported below
            pass
        _join_writer_threads()
        _remove_partial(directory)
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC
        reason = ("the disk is full: " if full else "") + _one_line(e)
        raise CheckpointError(
            f"saving checkpoint step {step} in {directory} failed ({reason}; needs about "
            f"{needed:,} bytes, {_free_bytes(directory):,} free); {kept}") from e


# ------------------------------------------------------------------------------------------
# Restore
# ------------------------------------------------------------------------------------------

def _host_target(state_dir: str):
    """numpy arrays of the saved shapes and dtypes, for restoring onto the host: what a
    process with other devices than the writer's (one process reading a checkpoint that two
    wrote) can always restore, where "as saved" names devices it does not have."""
    tree = ocp.StandardCheckpointer().metadata(state_dir).item_metadata
    tree = getattr(tree, "tree", tree)
    return jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state=None):
    """Restore ``step`` onto the shardings of ``abstract_state`` (ShapeDtypeStructs with
    ``.sharding``), so a checkpoint written on N devices loads on M; ``None``: as numpy
    arrays on the host, whatever devices and processes wrote it."""
    try:
        if abstract_state is None:
            abstract_state = _host_target(os.path.join(_step_dir(mngr, step), "state"))
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:
        msg, fits = _explain_mismatch(mngr, step, abstract_state, e)
        raise (CheckpointError if fits else CheckpointMismatch)(msg) from e
    return out["state"], out["meta"]


def _step_dir(mngr, step: int) -> str:
    return os.path.join(str(mngr.directory), str(step))


def restore_newest(mngr: ocp.CheckpointManager, abstract_state=None, fingerprint=None,
                   read_only: bool = False, log=print):
    """Restore the newest checkpoint that verifies: ``(state, meta, step)``, or None when
    there is none at all.

    Newer ones that fail verification or restore are reported (one line each) and, unless
    ``read_only``, moved to ``checkpoints-set-aside/``.  When every checkpoint fails, one
    ``CheckpointError`` lists each with its cause and nothing is moved.  A sound checkpoint
    that does not fit the model, or has another run's ``fingerprint``, is an error at once.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    directory = str(mngr.directory)
    sealed = any(os.path.exists(os.path.join(_step_dir(mngr, s), MANIFEST)) for s in steps)
    bad, unsealed = [], []

    def attempt(step, check: bool):
        try:
            if check:
                verify(_step_dir(mngr, step))
            return restore(mngr, step, abstract_state)
        except CheckpointUnsealed as e:
            unsealed.append(step)
            bad.append((step, str(e)))
        except CheckpointMismatch:
            raise
        except CheckpointError as e:
            bad.append((step, str(e)))
            log(f"Checkpoint step {step} in {directory} is unusable: {e}")
        return None

    # checkpoints written before manifests existed (none has one) load unverified
    found = next(((s, r) for s in steps if (r := attempt(s, sealed)) is not None), None)
    if found is None and unsealed:
        # a run killed between orbax's commit and the seal: orbax's commit marker is all
        # there is to go on, and better than no checkpoint at all
        found = next(((s, r) for s in list(unsealed) if (r := attempt(s, False)) is not None),
                     None)
        if found is not None:
            log(f"Checkpoint step {found[0]} was restored unverified: its run was stopped "
                f"before sealing it")
            if not read_only:
                seal(_step_dir(mngr, found[0]))
    if found is None:
        if bad:
            raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(
                f"step {s}: {why}" for s, why in bad) + ". Nothing was moved; pass "
                "--config.restart=True to start afresh (the checkpoints are moved aside)")
        return None
    step, (state, meta) = found
    if fingerprint is not None and meta.get("run_fingerprint") not in (None, fingerprint):
        raise CheckpointMismatch(
            f"checkpoint step {step} in {directory} belongs to another run (run "
            f"fingerprint {meta.get('run_fingerprint')}, this config's is {fingerprint})")
    newer = [(s, why) for s, why in bad if s > step]
    if newer and not read_only:
        for s, why in newer:
            log(f"Moved unusable checkpoint step {s} ({why}) to {set_aside(mngr, s)}")
        mngr.reload()
    return state, meta, step


def set_aside(mngr, step: int) -> str:
    """Move a step out of the manager's sight (``<workdir>/checkpoints-set-aside/``)."""
    parent = os.path.dirname(str(mngr.directory).rstrip("/"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = os.path.join(parent, SET_ASIDE, f"{step}-{stamp}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(_step_dir(mngr, step), dest)
    return dest


def _explain_mismatch(mngr, step, abstract_state, err) -> tuple[str, bool]:
    """Name the first parameter whose shape differs between checkpoint and model; the flag
    is False when the checkpoint is sound but of another model."""
    try:
        if abstract_state is None:
            raise ValueError
        saved = mngr.item_metadata(step)["state"]
        flat_saved = {_names(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved)}
        model_leaves = [(_names(p), v) for p, v in
                        jax.tree_util.tree_leaves_with_path(abstract_state)]
        for path, leaf in model_leaves:
            if path in flat_saved and tuple(flat_saved[path].shape) != tuple(leaf.shape):
                return (f"checkpoint step {step} in {mngr.directory} does not fit the model: "
                        f"{'/'.join(path)} has shape {tuple(flat_saved[path].shape)} in the "
                        f"checkpoint but {tuple(leaf.shape)} in the model"), False
        missing = ["/".join(p) for p, _ in model_leaves if p not in flat_saved]
        if missing:
            return (f"checkpoint step {step} in {mngr.directory} lacks {len(missing)} "
                    f"variables of the model, e.g. {missing[:3]}"), False
    except Exception:  # fall through to the original message
        pass
    return f"cannot restore checkpoint step {step} from {mngr.directory}: {_one_line(err)}", True


def _names(path) -> tuple[str, ...]:
    """A pytree path as plain names, whether it came from dicts, dataclasses or sequences."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def find_restore_path(path: str) -> tuple[str, int]:
    """Resolve an explicit ``init_from`` path: a workdir, its checkpoints dir, or one step dir.
    Raises when it does not exist or holds no complete checkpoint."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"init_from path {path} does not exist")
    candidates = [path, os.path.join(path, "checkpoints")]
    base = os.path.basename(path)
    if base.isdigit():
        parent = os.path.dirname(path)
        if os.path.isdir(os.path.join(path, "state")):
            return parent, int(base)
    for d in candidates:
        if os.path.isdir(d):
            steps = sorted(int(n) for n in os.listdir(d)
                           if n.isdigit() and os.path.isdir(os.path.join(d, n, "state")))
            if steps:
                return d, steps[-1]
    raise CheckpointError(f"init_from path {path} holds no complete checkpoint")


def restore_from(path: str, abstract_state):
    """Restore the newest checkpoint under an explicit path (see ``find_restore_path``)."""
    state, meta, _ = load(path, abstract_state)
    return state, meta


def load(path: str, abstract_state=None, log=print):
    """``(state, meta, step)`` of one step dir, or of the newest checkpoint that verifies in
    a workdir or checkpoints dir.  Writes nothing: read-only workdirs load too."""
    directory, step = find_restore_path(path)
    mngr = read_only_manager(directory)
    try:
        if os.path.basename(os.path.abspath(path)).isdigit():  # exactly this step
            if os.path.exists(os.path.join(directory, str(step), MANIFEST)):
                verify(os.path.join(directory, str(step)))
            return (*restore(mngr, step, abstract_state), step)
        return restore_newest(mngr, abstract_state, read_only=True, log=log)
    finally:
        mngr.close()


def restore_variables(path: str) -> tuple[dict, dict]:
    """``({'params', 'batch_stats'}, meta)`` of the newest checkpoint under ``path`` as numpy
    arrays, whatever optimizer wrote it (its state is not read into the new run)."""
    directory, step = find_restore_path(path)
    step_dir = os.path.join(directory, str(step))
    if os.path.exists(os.path.join(step_dir, MANIFEST)):  # sealed: refuse damaged files
        try:
            verify(step_dir)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {step_dir} fails verification: {e}") from e
    import warnings
    try:
        with warnings.catch_warnings():  # read onto host memory: no sharding to ask for
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            state_dir = os.path.join(step_dir, "state")
            state = ocp.StandardCheckpointer().restore(state_dir, _host_target(state_dir))
        meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
            os.path.join(step_dir, "meta"))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {step_dir}: {e}") from e
    variables = {k: state.get(k) or {} for k in ("params", "batch_stats")}
    if not variables["params"]:
        raise CheckpointError(f"checkpoint {step_dir} holds no params")
    return jax.tree.map(np.asarray, variables), dict(meta or {})
