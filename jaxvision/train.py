"""Train and evaluate a registered model: ``train_and_evaluate(config, workdir)``.

    python -m jaxvision.train --config experiments/configs/mnist_cnn.py --workdir /tmp/mnist \
        [--config.batch_size=256 ...]

Rerunning the same command on the same workdir resumes from the newest complete
checkpoint; the resumed run is step-for-step identical to an uninterrupted one.
SIGTERM writes a checkpoint at the current step and exits with status 75; SIGINT (Ctrl-C)
does the same and exits with 130 (jaxvision/preemption.py).  A rerun must be the same run
(jaxvision/run_identity.py) and only one trainer may use a workdir (jaxvision/runlock.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import checkpoint as ckpt
from jaxvision import config as config_lib
from jaxvision import evaluate as evaluation
from jaxvision import kernels, losses, optim, run_identity, sharding, utils
from jaxvision.data import loader as loader_lib
from jaxvision.data import pipeline
from jaxvision.metrics_log import MetricWriter, run_summary, truncate_metrics
from jaxvision.preemption import PREEMPTED_EXIT_CODE, Preempted, SignalFlag, exit_now  # noqa: F401
from jaxvision.registry import create_model, model_cfg
from jaxvision.runlock import WorkdirBusy, WorkdirLock
from jaxvision.train_step import (  # noqa: F401  (the step's pieces, under their old names)
    TrainState, accepts_targets, apply_train, make_train_step, sown_losses, tree_all_finite,
    with_distortion)


class NonFiniteError(FloatingPointError):
    """Training produced non-finite losses or gradients for too many consecutive steps."""


# -------------------------------------------------------------------------------------------
# Logging
# -------------------------------------------------------------------------------------------

def log(msg: str):
    if jax.process_index() == 0:
        print(msg, flush=True)


# -------------------------------------------------------------------------------------------
# train_and_evaluate
# -------------------------------------------------------------------------------------------

def train_and_evaluate(config, workdir: str) -> dict:
    """Train ``config.model`` on ``config.dataset``; returns the final eval metrics.

    Before anything is loaded or compiled, every setting is range-checked, the workdir is
    locked for this process's life, and a rerun is checked to be the same run
    (:func:`_guarded_run`)."""
    config_lib.validate_keys(config)
    config_lib.validate(config)
    profile = _profile_window(config.profile_steps)  # refused before the workdir is made
    with _guarded_run(config, workdir) as preempt:
        # ---- inputs: every setting checked against the data before anything is compiled ------
        inp = _inputs(config)
        data, num_classes = inp.data, inp.num_classes
        model = create_model(config.model, num_classes=num_classes,
                             dtype=jnp.dtype(config.dtype), **dict(config.model_kwargs))
        augment_fn, mix_fn, loss_fn, max_norm_fn = _step_pieces(config)

        # ---- mesh ----------------------------------------------------------------------------
        mesh = sharding.make_mesh()
        batch, eval_batch = config.batch_size, config.eval_batch_size or config.batch_size
        sharding.check_global_batch(batch, mesh)
        sharding.check_global_batch(eval_batch, mesh)
        if config.bn_group_size and batch % config.bn_group_size:
            raise ValueError(
                f"bn_group_size={config.bn_group_size} must divide batch_size={batch}")
        batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)

        # ---- data ----------------------------------------------------------------------------
        order = pipeline.BatchOrder(len(data.train), batch, config.seed)
        steps_per_epoch = order.steps_per_epoch
        total_steps = optim.steps_from(config.num_train_steps, config.num_epochs,
                                       steps_per_epoch)
        get_batch, loader = _train_batches(config, data, order, total_steps, inp.train_tf,
                                           batch_sh, repl)

        # ---- model and optimizer -------------------------------------------------------------
        init_state, image_shape = _state_initialiser(config, model, data, augment_fn,
                                                     total_steps, steps_per_epoch)
        abstract = jax.eval_shape(init_state)
        tx, lr_fn = optim.make_optimizer(config, abstract.params, total_steps, steps_per_epoch,
                                         batch)
        state_sh = jax.tree.map(lambda _: repl, abstract)
        abstract_sh = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
        predict = _predict_fn(config, model, inp, data, abstract, image_shape)

        # ---- update and evaluation steps -----------------------------------------------------
        train_step = jax.jit(
            make_train_step(model, tx, config, num_classes, inp.mean, inp.std, augment_fn,
                            mix_fn, loss_fn, max_norm_fn),
            in_shardings=(state_sh, batch_sh, batch_sh), out_shardings=(state_sh, repl),
            donate_argnums=0)
        eval_step = jax.jit(evaluation.make_eval_step(predict, num_classes, loss_fn),
                            in_shardings=(repl, batch_sh, batch_sh, batch_sh),
                            out_shardings=repl)

        def run_eval(state) -> dict:
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            if config.ema_decay and config.eval_with_ema:
                variables["params"] = state.ema_params
            return evaluation.evaluate_split(eval_step, variables, data.eval, eval_batch, mesh,
                                             inp.eval_tf, config.dataset.workers)

        # ---- restore or initialise -----------------------------------------------------------
        preempt.stop_before_training("while loading data")
        fingerprint = run_identity.fingerprint(run_identity.identity(config))
        mngr = ckpt.manager(workdir, config.max_to_keep, config.async_checkpoint)
        writer = MetricWriter(workdir)
        state = _restore_or_initialise(config, workdir, model, mngr, writer, abstract,
                                       abstract_sh, fingerprint, init_state, state_sh,
                                       image_shape, data)
        start_step = int(state.step)
        save = _saver(config, mngr, order, num_classes, fingerprint)

        # ---- loop ----------------------------------------------------------------------------
        # In-memory batches are gathered on the devices: there is no copy to overlap, and
        # dispatching gathers early only puts more programs in flight beside the step's.
        batches = _Prefetch(get_batch,
                            0 if data.train.in_memory else config.dataset.prefetch, total_steps)
        eval_every = config.eval_every_steps or steps_per_epoch
        ckpt_every = config.checkpoint_every_steps or steps_per_epoch
        n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
        log(f"Training {config.model} ({n_params:,} params) on {len(data.train):,} examples, "
            f"eval on {len(data.eval):,}; {total_steps} steps of {batch} ({steps_per_epoch} per "
            f"epoch) on {mesh.devices.size} device(s) / {jax.process_count()} process(es)")
        train_log = TrainLog(writer, lr_fn, batch, total_steps)
        profiler = _Profiler(profile, start_step, total_steps,
                             os.path.join(workdir, "profile"))
        final_eval = {}
        with _closing(profiler, mngr, writer, loader):
            for step in range(start_step, total_steps):
                profiler.before(step, state)
                if preempt.is_set() or _preemption_notice(step):
                    train_log.flush(step)  # the rows of the steps done since the last flush
                    _checkpoint_and_stop(mngr, save, state, step, preempt)
                images, labels = batches(step)
                state, metrics = train_step(state, images, labels)
                done = step + 1
                train_log.add(done, metrics)
                profiler.after(done, (state, metrics))
                if done % config.log_every_steps == 0 or done == total_steps:
                    train_log.flush(done)
                    _check_nonfinite(state, done, config, mngr)
                if done % ckpt_every == 0 or done == total_steps:
                    train_log.flush(done)
                    _check_nonfinite(state, done, config, mngr)
                    save(state, done)
                if done % eval_every == 0 or done == total_steps:
                    final_eval = run_eval(state)
                    writer.write({"step": done, **final_eval})
                    log(f"[eval] step {done}: loss {final_eval['eval_loss']:.4f}, accuracy "
                        f"{final_eval['eval_accuracy']:.4%} on {final_eval['eval_count']} "
                        "examples")
            if not final_eval:
                final_eval = run_eval(state)
            ckpt.finish(mngr)  # a failed last save is this run's error
        return final_eval


@contextlib.contextmanager
def _guarded_run(config, workdir: str):
    """Run safety around the training story: the kernels it will use are recorded, SIGTERM
    and SIGINT are caught (the flag is yielded), the workdir is made and locked, a rerun is
    checked to be the same run, and the block traces with ``config.kernels``.  On success
    the run's summary is printed; the lock and the signal handlers are released either way."""
    _record_kernels(config)
    signals = SignalFlag().install()
    lock = None
    try:
        os.makedirs(workdir, exist_ok=True)
        if jax.process_index() == 0:
            lock = WorkdirLock(workdir).acquire()
        run_identity.check_and_record(config, workdir, log=log,
                                      write=jax.process_index() == 0)
        signals.stop_before_training("while checking the workdir")
        start = time.time()
        with kernels.use(**kernels.from_config(config)):
            yield signals
        if jax.process_index() == 0:
            log(run_summary(workdir, time.time() - start))
    finally:
        signals.restore()
        if lock is not None:
            lock.release()


def _record_kernels(config):
    """Resolve ``config.kernels`` to the kernels this run uses, so that its ``config.json``
    records them; refuse a CPU convolution library that XLA did not start with."""
    asked = config.kernels.cpu_conv_library
    used = kernels.in_effect(config)
    if asked not in ("", "auto") and jax.default_backend() == "cpu" and (
            used["cpu_conv_library"] != asked):
        raise ValueError(
            f"kernels.cpu_conv_library={asked!r}, but XLA:CPU started with "
            f"{used['cpu_conv_library']!r}: the library is chosen before JAX starts (the "
            f"command line does it; a program calls jaxvision.backends.cpu."
            f"configure_cpu_convolutions({asked!r}) before its first computation)")
    for key, value in used.items():
        config.kernels[key] = value


# -------------------------------------------------------------------------------------------
# Pieces of the run
# -------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What :func:`_inputs` returns."""
    data: Any
    num_classes: int
    input_size: tuple
    train_tf: Any
    eval_tf: Any
    mean: jnp.ndarray
    std: jnp.ndarray


def _inputs(config) -> _Inputs:
    """The datasets, their transforms and normalisation, validated against the model."""
    mcfg = model_cfg(config.model)
    input_size = mcfg["input_size"]
    data = pipeline.load_datasets(config.dataset, config.num_classes or None, input_size)
    num_classes = config.num_classes or data.num_classes
    # streaming splits are read through the configured train/eval transforms
    train_tf, eval_tf = loader_lib.attach_transforms(data, config.dataset, config.model,
                                                     input_size)
    pipeline.validate_split(data.train, num_classes, input_size, "train")
    pipeline.validate_split(data.eval, num_classes, input_size, "eval")
    mean = jnp.asarray(config.dataset.mean or mcfg["mean"], jnp.float32)
    std = jnp.asarray(config.dataset.std or mcfg["std"], jnp.float32)
    if mean.shape[0] != input_size[2]:
        raise ValueError(f"mean/std have {mean.shape[0]} entries for {input_size[2]} channels")
    return _Inputs(data, num_classes, tuple(input_size), train_tf, eval_tf, mean, std)


def _step_pieces(config):
    """(augment, mix, loss, max-norm projection) of the update step; None where unused."""
    augment_fn = mix_fn = max_norm_fn = None
    if config.augment or config.mix:
        from jaxvision.data import augment as aug
        augment_fn = aug.build_augment(config.augment) if config.augment else None
        mix_fn = aug.build_mix(config.mix) if config.mix else None
    if config.dataset.distort:
        augment_fn = with_distortion(config.dataset.distort, augment_fn)
    if config.max_norm:
        from jaxvision.layers.maxnorm import project_max_norm
        max_norm_fn = lambda p: project_max_norm(p, config.max_norm)  # noqa: E731
    return augment_fn, mix_fn, losses.get_loss(config.loss), max_norm_fn


def _train_batches(config, data, order, total_steps, train_tf, batch_sh, repl):
    """``(get_batch, loader)``: the global batch of a step, a function of (seed, step) alone;
    the loader (worker processes) of a streamed split, None for one held in memory."""
    host = sharding.host_slice(config.batch_size)
    if data.train.in_memory:
        # Small datasets live on device; each step gathers its batch there.
        train_x = jax.device_put(data.train.images, repl)
        train_y = jax.device_put(data.train.labels.astype(np.int32), repl)
        gather = jax.jit(lambda xs, ys, i: (xs[i], ys[i]), out_shardings=(batch_sh, batch_sh))

        def get_batch(step):
            idx = order.indices(step)[host].astype(np.int32)
            return gather(train_x, train_y, sharding.global_array(idx, batch_sh))
        return get_batch, None
    # worker processes make each step's batch from (seed, step) alone (data/loader.py)
    loader = loader_lib.StepLoader(
        loader_lib.TrainBatches(data.train, order, loader_lib.host_range(host, config.batch_size),
                                train_tf, config.seed),
        total_steps, config.dataset.workers, buffer=config.dataset.prefetch + 1)

    def get_batch(step):
        x, y = loader(step)
        return (sharding.global_array(x, batch_sh),
                sharding.global_array(y.astype(np.int32), batch_sh))
    return get_batch, loader


def _state_initialiser(config, model, data, augment_fn, total_steps, steps_per_epoch):
    """``(init_state, image_shape)``: a function making the initial TrainState, and the shape
    of one image as the model sees it (after the augmentation, which may crop)."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    h, w, c = data.train.image_shape
    if augment_fn is not None:
        h, w, c = jax.eval_shape(augment_fn, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)).shape[1:]

    def init_state():
        x = jnp.zeros((1, h, w, c), jnp.float32)
        variables = model.init({"params": init_rng, "dropout": init_rng}, x, train=False)
        params = variables["params"]
        tx, _ = optim.make_optimizer(config, params, total_steps, steps_per_epoch,
                                     config.batch_size)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params,
            batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
            rng=state_rng, ema_params=params if config.ema_decay else {},
            nonfinite=jnp.zeros((), jnp.int32), skipped_total=jnp.zeros((), jnp.int32))
    return init_state, (h, w, c)


def _predict_fn(config, model, inp, data, abstract, image_shape):
    """The evaluation forward pass, checked by shape alone (now, not after the first epoch)
    to take the evaluation images of a model initialised on the training crops."""
    # ten_crop: crops of the model's size from larger images, else 87.5% crops
    eval_h = data.eval.image_shape[0]
    h_in = inp.input_size[0] if eval_h > inp.input_size[0] else int(round(0.875 * eval_h))
    predict = evaluation.make_predict(model, inp.mean, inp.std, jnp.dtype(config.dtype),
                                      config.eval_crops, crop_size=h_in)
    try:
        jax.eval_shape(predict, {"params": abstract.params, "batch_stats": abstract.batch_stats},
                       jax.ShapeDtypeStruct((1, *data.eval.image_shape), jnp.uint8))
    except flax.errors.ScopeParamShapeError as e:
        h, w = image_shape[:2]
        raise ValueError(
            f"{config.model} was initialised on {h}x{w} training inputs (after "
            f"augment={config.augment!r}) but cannot take the {data.eval.image_shape[0]}x"
            f"{data.eval.image_shape[1]} evaluation images (eval_crops={config.eval_crops!r}); "
            f"make the augmentation keep the image size or set dataset.image_size") from e
    return predict


def _restore_or_initialise(config, workdir, model, mngr, writer, abstract, abstract_sh,
                           fingerprint, init_state, state_sh, image_shape, data):
    """The newest checkpoint of this run, else a fresh (or fine-tuned) initial state."""
    restored = ckpt.restore_newest(mngr, abstract_sh, fingerprint, log=log)
    # the log holds each step once: rows past the restored step (all, from scratch) go
    truncate_metrics(writer.path, restored[2] if restored else 0)
    if restored is not None:
        state, meta, latest = restored
        log(f"Resumed from {ckpt.checkpoint_dir(workdir)}/{latest} "
            f"(data position {meta.get('data_position')})")
        return state
    if config.init_from or config.pretrained:  # params + batch stats only: finetune.py
        from jaxvision import finetune
        source = finetune.check(config, model, image_shape, abstract)  # before compiling
    state = utils.compile_init(jax.jit(init_state, out_shardings=state_sh))()
    if config.init_from or config.pretrained:
        state = finetune.initialise(state, config, log, source)
    if jax.process_index() == 0:
        from jaxvision.predict import class_names, write_classes  # for jaxvision.predict
        write_classes(workdir, class_names(config.dataset, data))
    return state


class _Prefetch:
    """The batch of a step, with those of the next ``ahead`` steps already on their way to
    the devices (transfers are asynchronous: they overlap the running step).  Batches are a
    function of the step number, so this changes nothing but timing."""

    def __init__(self, get_batch, ahead: int, total_steps: int):
        self.get_batch, self.ahead, self.total = get_batch, ahead, total_steps
        self.in_flight: dict[int, tuple] = {}

    def __call__(self, step):
        for s in range(step, min(step + 1 + self.ahead, self.total)):
            if s not in self.in_flight:
                self.in_flight[s] = self.get_batch(s)
        return self.in_flight.pop(step)


def _saver(config, mngr, order, num_classes, fingerprint):
    """``save(state, step, force=False)``: a checkpoint of a finite state, with the metadata a
    resume checks."""
    def save(state, step, force=False):
        if not bool(tree_all_finite((state.params, state.batch_stats))):
            raise NonFiniteError(f"refusing to checkpoint a non-finite state at step {step}")
        # The data position is the step: on resume the loader restarts at the restored step
        # (StepLoader(step)), whose batches and crops are a function of (seed, step) alone.
        ckpt.save(mngr, step, state, {
            "step": step, "data_position": order.position(step), "model": config.model,
            "num_classes": num_classes, "run_fingerprint": fingerprint}, force=force)
    return save


@contextlib.contextmanager
def _closing(profiler, mngr, writer, loader):
    """The loop's resources released however it ends (a failed save was already reported
    by ``ckpt.finish`` or ``ckpt.save``)."""
    try:
        yield
    finally:
        profiler.close()
        try:
            mngr.wait_until_finished()
            mngr.close()
        except Exception:  # noqa: BLE001 -- already reported
            pass
        writer.close()
        if loader is not None:
            loader.close()


def _checkpoint_and_stop(mngr, save, state, step, preempt):
    """On a signal or a preemption notice: a checkpoint at ``step``, then ``Preempted``."""
    ckpt.finish(mngr)
    if mngr.latest_step() != step:  # else this step is already saved
        save(state, step, force=True)
        ckpt.finish(mngr)
    log(f"{preempt.describe()}: checkpoint written at step {step}; rerun to resume.")
    raise Preempted(step, preempt.exit_code)


# -------------------------------------------------------------------------------------------
# Periodic work of the loop.  clu's periodic_actions would fit, but importing any part of clu
# imports clu.metric_writers and with it TensorFlow (clu 0.0.12), which jaxvision does not
# otherwise need; these are the two pieces the loop uses.
# -------------------------------------------------------------------------------------------

class TrainLog:
    """The metric rows of the steps since the last flush, written (one device-to-host copy)
    and printed when ``flush`` is called: every ``log_every_steps``, before a checkpoint and
    before a preemption checkpoint, so that no logged step is lost."""

    def __init__(self, writer, lr_fn, batch: int, total_steps: int):
        self.writer, self.lr_fn, self.batch, self.total = writer, lr_fn, batch, total_steps
        self.pending: list = []
        self.t0 = time.time()

    def add(self, step: int, metrics):
        self.pending.append((step, metrics))

    def flush(self, done: int):
        if not self.pending:
            return
        host = jax.device_get([m for _, m in self.pending])
        dt = max(time.time() - self.t0, 1e-9)
        rate = len(self.pending) * self.batch / dt  # images per second since the last flush
        for (step, _), m in zip(self.pending, host):
            self.writer.write({"step": step, "train_loss": float(m["train_loss"]),
                               "train_accuracy": float(m["train_accuracy"]),
                               "learning_rate": float(self.lr_fn(step - 1)),
                               "grad_norm": float(m["grad_norm"]), "skipped": int(m["skipped"]),
                               **({"img_per_s": rate} if step == done else {})})
        eta = (self.total - done) / max(len(self.pending) / dt, 1e-9)
        last = host[-1]
        log(f"step {done}/{self.total}  loss {float(last['train_loss']):.4f}  "
            f"acc {float(last['train_accuracy']):.3f}  lr {float(self.lr_fn(done - 1)):.3g}  "
            f"{rate:,.0f} img/s  ETA {_fmt_time(eta)}")
        self.pending, self.t0 = [], time.time()


class _Profiler:
    """A jax.profiler trace of steps [start, stop) (``config.profile_steps``), or nothing."""

    def __init__(self, window, start_step: int, total_steps: int, logdir: str):
        self.window, self.total, self.logdir = window, total_steps, logdir
        self.first = max(window[0], start_step) if window else None
        self.active = False

    def before(self, step: int, state):
        if self.window and step == self.first and step < self.window[1]:
            jax.block_until_ready(state)  # the trace then holds these steps' work only
            jax.profiler.start_trace(self.logdir)
            self.active = True

    def after(self, done: int, outputs):
        if self.active and (done == self.window[1] or done == self.total):
            jax.block_until_ready(outputs)
            self.close()
            log(f"Profile of steps {self.first}..{done - 1} written to {self.logdir}")

    def close(self):
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


def _profile_window(steps) -> tuple[int, int] | None:
    """``config.profile_steps`` as ``(start, stop)``, or None when empty; checked up front."""
    if steps is None or len(steps) == 0:
        return None
    ok = (len(steps) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in steps)
          and 0 <= steps[0] < steps[1])
    if not ok:
        raise ValueError(f"profile_steps must be (start, stop) with 0 <= start < stop, got "
                         f"{tuple(steps)!r}")
    return int(steps[0]), int(steps[1])


def _check_nonfinite(state, step, config, mngr):
    n = int(state.nonfinite)
    if n and n >= config.max_consecutive_nonfinite:
        last = mngr.latest_step()
        where = (f"last finite checkpoint: step {last} in {mngr.directory}" if last is not None
                 else "no checkpoint was written")
        raise NonFiniteError(
            f"non-finite loss or gradient at steps {step - n + 1}..{step} ({n} consecutive "
            f"updates skipped, max_consecutive_nonfinite={config.max_consecutive_nonfinite}); "
            f"{where}")


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _preemption_notice(step: int) -> bool:
    """Multi-host preemption notice from the JAX coordination service, when it runs."""
    if jax.process_count() == 1:
        return False
    try:
        from jax.experimental import multihost_utils
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except Exception:
        return False


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------

# Errors that mean "the input or the workdir is wrong": the CLI prints them as one line.
USER_ERRORS = (ckpt.CheckpointError, run_identity.RunMismatch, WorkdirBusy, ValueError,
               KeyError, NonFiniteError)


def cli(argv=None):
    from jaxvision.preemption import exit_on_signals, ignore_after_completion
    exit_on_signals()  # SIGTERM / SIGINT while starting: the documented status, a message
    if argv is None:  # a command line, not a call from a program
        from jaxvision.allocator import reexec_with_allocator
        reexec_with_allocator()  # tcmalloc where installed: jaxvision/allocator.py
    from absl import app, flags
    from ml_collections import config_flags

    flags_ = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Experiment config: a name (mnist_cnn, "
                                    "mnist_cnn:idx) or a file's path.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).")
    flags.mark_flags_as_required(["config", "workdir"])
    from jaxvision.utils import absl_help_lists  # --help of the jaxvision-train script
    absl_help_lists(flags_, ["config", "workdir", "coordinator_address", "num_processes",
                             "process_id"])

    def main(_):
        from absl import logging

        from jaxvision.backends.cpu import configure_cpu_convolutions
        try:  # XLA_FLAGS are read when JAX starts its backends
            configure_cpu_convolutions(
                kernels.cpu_conv_library(flags_.config.kernels.cpu_conv_library))
        except ValueError as e:
            print(f"Error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            exit_now(1)
        if logging.get_verbosity() == logging.INFO and not flags_["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
        if flags_.coordinator_address:
            jax.distributed.initialize(flags_.coordinator_address, flags_.num_processes,
                                       flags_.process_id)
        config = flags_.config
        try:
            result = train_and_evaluate(config, flags_.workdir)
        except Preempted as e:
            exit_now(e.code)
        except USER_ERRORS as e:
            # the cause, as the last line printed; no traceback (and none from orbax's
            # background threads at interpreter shutdown)
            print(f"Error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            exit_now(1)
        ignore_after_completion()  # the run is complete: a signal now has nothing to stop
        log(json.dumps(result))

    from jaxvision.experiment_configs import resolve_command_line  # --config NAME
    app.run(main, argv=resolve_command_line(argv))


if __name__ == "__main__":
    cli()
