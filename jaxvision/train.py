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

import inspect
import json
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


class NonFiniteError(FloatingPointError):
    """Training produced non-finite losses or gradients for too many consecutive steps."""


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jnp.ndarray            # raw uint32 key data
    ema_params: Any             # {} when EMA is off
    nonfinite: jnp.ndarray      # consecutive skipped (non-finite) updates
    skipped_total: jnp.ndarray


# -------------------------------------------------------------------------------------------
# Pieces of the step
# -------------------------------------------------------------------------------------------

def accepts_targets(model) -> bool:
    return "targets" in inspect.signature(type(model).__call__).parameters


def sown_losses(mutated) -> jnp.ndarray:
    """Sum of every auxiliary loss a model emitted with ``self.sow('losses', ...)``."""
    leaves = jax.tree.leaves(mutated.get("losses", {}))
    return sum((jnp.asarray(v, jnp.float32) for v in leaves), jnp.zeros((), jnp.float32))


def apply_train(model, params, batch_stats, x, targets, rng, bn_group_size: int = 0):
    """Training-mode forward pass -> (logits, new batch_stats, auxiliary loss).

    With ``bn_group_size = k`` the batch is cut into groups of k examples and the model is
    vmapped over them, so batch-norm statistics are those of each group (per-worker BN,
    Goyal et al., 2017) whatever the number of devices; running statistics are averaged.
    """
    kwargs = {"targets": targets} if accepts_targets(model) else {}
    variables = {"params": params, "batch_stats": batch_stats}

    def run(x, t, r):
        kw = {"targets": t} if kwargs else {}
        return model.apply(variables, x, train=True, rngs={"dropout": r},
                           mutable=["batch_stats", "losses"], **kw)

    if not bn_group_size:
        logits, mutated = run(x, targets, rng)
        return logits, mutated.get("batch_stats", batch_stats), sown_losses(mutated)
    b, k = x.shape[0], bn_group_size
    g = b // k
    logits, mutated = jax.vmap(run)(x.reshape(g, k, *x.shape[1:]),
                                    targets.reshape(g, k, -1), jax.random.split(rng, g))
    new_stats = jax.tree.map(lambda s: s.mean(axis=0), mutated.get("batch_stats", batch_stats))
    aux = jnp.mean(jax.vmap(sown_losses)(mutated)) if "losses" in mutated else 0.0
    return logits.reshape(b, -1), new_stats, aux


@jax.jit
def tree_all_finite(tree) -> jnp.ndarray:
    """Whether every element of every leaf is finite (one compiled program per tree)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _with_distortion(mode: str, augment_fn):
    """Distort each training batch (``dataset.distort``) before the other augmentations."""
    from jaxvision.data import distort

    def fn(rng, x):
        k_distort, k_aug = jax.random.split(rng)
        x = distort.distort(k_distort, x, mode)
        return augment_fn(k_aug, x) if augment_fn is not None else x
    return fn


def make_train_step(model, tx, config, num_classes, mean, std, augment_fn, mix_fn, loss_fn,
                    max_norm_fn=None):
    dtype = jnp.dtype(config.dtype)

    def train_step(state: TrainState, images, labels):
        rng = jax.random.fold_in(state.rng, state.step)
        aug_rng, mix_rng, drop_rng = jax.random.split(rng, 3)
        x = images.astype(jnp.float32) / 255.0
        if augment_fn is not None:
            x = augment_fn(aug_rng, x)
        targets = losses.smooth_labels(losses.one_hot_checked(labels, num_classes),
                                       config.label_smoothing)
        if mix_fn is not None:
            x, targets = mix_fn(mix_rng, x, targets)
        x = evaluation.normalize(x, mean, std, dtype)

        def objective(params):
            logits, new_stats, aux = apply_train(model, params, state.batch_stats, x, targets,
                                                 drop_rng, config.bn_group_size)
            loss = jnp.mean(loss_fn(logits, targets)) + aux
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        if max_norm_fn is not None:
            new_params = max_norm_fn(new_params)
        grad_norm = optax.tree.norm(grads)
        # A non-finite loss or gradient skips the whole update (params, optimizer state and
        # batch statistics stay as they were); the caller stops after too many in a row.
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & tree_all_finite(new_stats)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa
        new_params = keep(new_params, state.params)
        ema = state.ema_params
        if config.ema_decay:
            d = config.ema_decay
            ema = keep(jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, new_params), ema)
        new_state = state.replace(
            step=state.step + 1, params=new_params,
            batch_stats=keep(new_stats, state.batch_stats), opt_state=keep(new_opt, state.opt_state),
            ema_params=ema, nonfinite=jnp.where(ok, 0, state.nonfinite + 1),
            skipped_total=state.skipped_total + jnp.where(ok, 0, 1))
        acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        metrics = {"train_loss": loss, "train_accuracy": acc, "grad_norm": grad_norm,
                   "skipped": 1 - ok.astype(jnp.int32)}
        return new_state, metrics

    return train_step


# -------------------------------------------------------------------------------------------
# Logging
# -------------------------------------------------------------------------------------------

def log(msg: str):
    if jax.process_index() == 0:
        print(msg, flush=True)


# -------------------------------------------------------------------------------------------
# train_and_evaluate
# -------------------------------------------------------------------------------------------

# ---- run safety: checks, the workdir lock and signals around the run (begin) ------------
def train_and_evaluate(config, workdir: str) -> dict:
    """Train ``config.model`` on ``config.dataset``; returns the final eval metrics.

    Before anything is loaded or compiled, every setting is range-checked, the workdir is
    locked for this process's life, and a rerun is checked to be the same run."""
    config_lib.validate_keys(config)
    config_lib.validate(config)
    _profile_window(config.profile_steps)  # a bad window is refused before the workdir is made
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
            result = _train(config, workdir, signals)
        if jax.process_index() == 0:
            log(run_summary(workdir, time.time() - start))
        return result
    finally:
        signals.restore()
        if lock is not None:
            lock.release()
# ---- run safety (end) -------------------------------------------------------------------


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


def _train(config, workdir: str, preempt: SignalFlag) -> dict:
    # ---- setup: validate everything before compiling anything -------------------------
    prefetch = config.dataset.prefetch
    profile = _profile_window(config.profile_steps)
    mcfg = model_cfg(config.model)
    input_size = mcfg["input_size"]
    data = pipeline.load_datasets(config.dataset, config.num_classes or None, input_size)
    num_classes = config.num_classes or data.num_classes
    # streaming splits are read through the configured train/eval transforms
    train_tf, eval_tf = loader_lib.attach_transforms(data, config.dataset, config.model,
                                                     input_size)
    pipeline.validate_split(data.train, num_classes, input_size, "train")
    pipeline.validate_split(data.eval, num_classes, input_size, "eval")
    model = create_model(config.model, num_classes=num_classes, dtype=jnp.dtype(config.dtype),
                         **dict(config.model_kwargs))
    mean = jnp.asarray(config.dataset.mean or mcfg["mean"], jnp.float32)
    std = jnp.asarray(config.dataset.std or mcfg["std"], jnp.float32)
    if mean.shape[0] != input_size[2]:
        raise ValueError(f"mean/std have {mean.shape[0]} entries for {input_size[2]} channels")
    augment_fn = mix_fn = None
    if config.augment or config.mix:
        from jaxvision.data import augment as aug
        augment_fn = aug.build_augment(config.augment) if config.augment else None
        mix_fn = aug.build_mix(config.mix) if config.mix else None
    if config.dataset.distort:
        augment_fn = _with_distortion(config.dataset.distort, augment_fn)
    loss_fn = losses.get_loss(config.loss)
    max_norm_fn = None
    if config.max_norm:
        from jaxvision.layers.maxnorm import project_max_norm
        max_norm_fn = lambda p: project_max_norm(p, config.max_norm)  # noqa: E731

    # ---- mesh ---------------------------------------------------------------------------
    mesh = sharding.make_mesh()
    batch = config.batch_size
    sharding.check_global_batch(batch, mesh)
    eval_batch = config.eval_batch_size or batch
    sharding.check_global_batch(eval_batch, mesh)
    if config.bn_group_size and batch % config.bn_group_size:
        raise ValueError(f"bn_group_size={config.bn_group_size} must divide batch_size={batch}")
    batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)

    # ---- data ---------------------------------------------------------------------------
    order = pipeline.BatchOrder(len(data.train), batch, config.seed)
    steps_per_epoch = order.steps_per_epoch
    total_steps = optim.steps_from(config.num_train_steps, config.num_epochs, steps_per_epoch)
    host = sharding.host_slice(batch)
    if data.train.in_memory:
        # Small datasets live on device; each step gathers its batch there.
        train_x = jax.device_put(data.train.images, repl)
        train_y = jax.device_put(data.train.labels.astype(np.int32), repl)
        gather = jax.jit(lambda xs, ys, i: (xs[i], ys[i]), out_shardings=(batch_sh, batch_sh))

        def get_batch(step):
            idx = order.indices(step)[host].astype(np.int32)
            return gather(train_x, train_y, sharding.global_array(idx, batch_sh))
        loader = None
    else:
        # worker processes make each step's batch from (seed, step) alone (data/loader.py)
        loader = loader_lib.StepLoader(
            loader_lib.TrainBatches(data.train, order, loader_lib.host_range(host, batch),
                                    train_tf, config.seed),
            total_steps, config.dataset.workers, buffer=prefetch + 1)

        def get_batch(step):
            x, y = loader(step)
            return (sharding.global_array(x, batch_sh),
                    sharding.global_array(y.astype(np.int32), batch_sh))

    # ---- model and optimizer ------------------------------------------------------------
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    h, w, c = data.train.image_shape
    if augment_fn is not None:
        # the model sees what the augmentation makes (a crop may change the size)
        h, w, c = jax.eval_shape(augment_fn, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)).shape[1:]

    def init_state():
        x = jnp.zeros((1, h, w, c), jnp.float32)
        variables = model.init({"params": init_rng, "dropout": init_rng}, x, train=False)
        params = variables["params"]
        tx, _ = optim.make_optimizer(config, params, total_steps, steps_per_epoch, batch)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params,
            batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
            rng=state_rng, ema_params=params if config.ema_decay else {},
            nonfinite=jnp.zeros((), jnp.int32), skipped_total=jnp.zeros((), jnp.int32))

    abstract = jax.eval_shape(init_state)
    tx, lr_fn = optim.make_optimizer(config, abstract.params, total_steps, steps_per_epoch, batch)

    # ---- shard and place ----------------------------------------------------------------
    state_sh = jax.tree.map(lambda _: repl, abstract)
    abstract_sh = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                               abstract, state_sh)

    # ten_crop: crops of the model's size from larger images, else 87.5% crops
    eval_h = data.eval.image_shape[0]
    h_in = input_size[0] if eval_h > input_size[0] else int(round(0.875 * eval_h))
    predict = evaluation.make_predict(model, mean, std, jnp.dtype(config.dtype),
                                      config.eval_crops, crop_size=h_in)
    # a model initialised on the training crops must also take the evaluation images: check
    # by shape alone now, not after the first epoch
    try:
        jax.eval_shape(predict, {"params": abstract.params, "batch_stats": abstract.batch_stats},
                       jax.ShapeDtypeStruct((1, *data.eval.image_shape), jnp.uint8))
    except flax.errors.ScopeParamShapeError as e:
        raise ValueError(
            f"{config.model} was initialised on {h}x{w} training inputs (after "
            f"augment={config.augment!r}) but cannot take the {data.eval.image_shape[0]}x"
            f"{data.eval.image_shape[1]} evaluation images (eval_crops={config.eval_crops!r}); "
            f"make the augmentation keep the image size or set dataset.image_size") from e

    # ---- update step --------------------------------------------------------------------
    train_step = jax.jit(
        make_train_step(model, tx, config, num_classes, mean, std, augment_fn, mix_fn, loss_fn,
                        max_norm_fn),
        in_shardings=(state_sh, batch_sh, batch_sh), out_shardings=(state_sh, repl),
        donate_argnums=0)
    eval_step = jax.jit(evaluation.make_eval_step(predict, num_classes, loss_fn),
                        in_shardings=(repl, batch_sh, batch_sh, batch_sh), out_shardings=repl)

    # ---- restore ------------------------------------------------------------------------
    preempt.stop_before_training("while loading data")
    fingerprint = run_identity.fingerprint(run_identity.identity(config))
    mngr = ckpt.manager(workdir, config.max_to_keep, config.async_checkpoint)
    writer = MetricWriter(workdir)
    restored = ckpt.restore_newest(mngr, abstract_sh, fingerprint, log=log)
    # the log holds each step once: rows past the restored step (all, from scratch) go
    truncate_metrics(writer.path, restored[2] if restored else 0)
    if restored is not None:
        state, meta, latest = restored
        log(f"Resumed from {ckpt.checkpoint_dir(workdir)}/{latest} "
            f"(data position {meta.get('data_position')})")
    else:
        if config.init_from or config.pretrained:  # params + batch stats only: finetune.py
            from jaxvision import finetune
            source = finetune.check(config, model, (h, w, c), abstract)  # before compiling
        state = utils.compile_init(jax.jit(init_state, out_shardings=state_sh))()
        if config.init_from or config.pretrained:
            state = finetune.initialise(state, config, log, source)
        if jax.process_index() == 0:
            from jaxvision.predict import class_names, write_classes  # for jaxvision.predict
            write_classes(workdir, class_names(config.dataset, data))
    start_step = int(state.step)

    # ---- evals --------------------------------------------------------------------------
    def run_eval(state) -> dict:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        if config.ema_decay and config.eval_with_ema:
            variables["params"] = state.ema_params
        return evaluation.evaluate_split(eval_step, variables, data.eval, eval_batch, mesh,
                                         eval_tf, config.dataset.workers)

    def meta(step):
        # The data position is the step: on resume the loader restarts at the restored step
        # (StepLoader(step)), whose batches and crops are a function of (seed, step) alone.
        return {"step": step, "data_position": order.position(step),
                "model": config.model, "num_classes": num_classes,
                "run_fingerprint": fingerprint}

    def save(state, step, force=False):
        if not bool(tree_all_finite((state.params, state.batch_stats))):
            raise NonFiniteError(f"refusing to checkpoint a non-finite state at step {step}")
        ckpt.save(mngr, step, state, meta(step), force=force)

    # ---- loop ---------------------------------------------------------------------------
    in_flight: dict[int, tuple] = {}
    # In-memory batches are gathered on the devices: there is no copy to overlap, and
    # dispatching gathers early only puts more programs in flight beside the step's.
    ahead = 0 if data.train.in_memory else prefetch

    def next_batch(step):
        """The batch of ``step``, with those of the next ``prefetch`` steps already on their
        way to the devices (transfers are asynchronous: they overlap the running step).
        Batches are a function of the step number, so this changes nothing but timing."""
        for s in range(step, min(step + 1 + ahead, total_steps)):
            if s not in in_flight:
                in_flight[s] = get_batch(s)
        return in_flight.pop(step)

    eval_every = config.eval_every_steps or steps_per_epoch
    ckpt_every = config.checkpoint_every_steps or steps_per_epoch
    log(f"Training {config.model} ({sum(x.size for x in jax.tree.leaves(abstract.params)):,} "
        f"params) on {len(data.train):,} examples, eval on {len(data.eval):,}; "
        f"{total_steps} steps of {batch} ({steps_per_epoch} per epoch) on "
        f"{mesh.devices.size} device(s) / {jax.process_count()} process(es)")
    final_eval, pending = {}, []
    t0, imgs_since = time.time(), 0
    profiling = False
    traced_from = max(profile[0], start_step) if profile else None
    try:
        for step in range(start_step, total_steps):
            if profile and step == traced_from and step < profile[1]:
                jax.block_until_ready(state)  # the trace then holds these steps' work only
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
                profiling = True
            if preempt.is_set() or _preemption_notice(step):
                if pending:  # the rows of the steps done since the last flush
                    _flush_train_logs(pending, writer, lr_fn, t0, imgs_since, step, total_steps)
                    pending = []
                ckpt.finish(mngr)
                if mngr.latest_step() != step:  # else this step is already saved
                    save(state, step, force=True)
                    ckpt.finish(mngr)
                log(f"{preempt.describe()}: checkpoint written at step {step}; rerun to resume.")
                raise Preempted(step, preempt.exit_code)
            images, labels = next_batch(step)
            state, metrics = train_step(state, images, labels)
            pending.append((step + 1, metrics))
            imgs_since += batch
            done = step + 1
            if profiling and (done == profile[1] or done == total_steps):
                jax.block_until_ready((state, metrics))
                jax.profiler.stop_trace()
                profiling = False
                log(f"Profile of steps {traced_from}..{done - 1} written to "
                    f"{os.path.join(workdir, 'profile')}")
            if done % config.log_every_steps == 0 or done == total_steps:
                _flush_train_logs(pending, writer, lr_fn, t0, imgs_since, done, total_steps)
                pending, t0, imgs_since = [], time.time(), 0
                _check_nonfinite(state, done, config, mngr)
            if done % ckpt_every == 0 or done == total_steps:
                if pending:
                    _flush_train_logs(pending, writer, lr_fn, t0, imgs_since, done, total_steps)
                    pending, t0, imgs_since = [], time.time(), 0
                _check_nonfinite(state, done, config, mngr)
                save(state, done)
            if done % eval_every == 0 or done == total_steps:
                final_eval = run_eval(state)
                writer.write({"step": done, **final_eval})
                log(f"[eval] step {done}: loss {final_eval['eval_loss']:.4f}, accuracy "
                    f"{final_eval['eval_accuracy']:.4%} on {final_eval['eval_count']} examples")
        if not final_eval:
            final_eval = run_eval(state)
        ckpt.finish(mngr)  # a failed last save is this run's error
    finally:
        if profiling:
            jax.profiler.stop_trace()
        try:
            mngr.wait_until_finished()
            mngr.close()
        except Exception:  # noqa: BLE001 -- already reported by ckpt.finish / ckpt.save
            pass
        writer.close()
        if loader is not None:
            loader.close()
    return final_eval


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


def _flush_train_logs(pending, writer, lr_fn, t0, imgs, done, total):
    host = jax.device_get([m for _, m in pending])
    dt = max(time.time() - t0, 1e-9)
    rate = imgs / dt  # training images per second since the last flush: the last row's
    for (step, _), m in zip(pending, host):
        writer.write({"step": step, "train_loss": float(m["train_loss"]),
                      "train_accuracy": float(m["train_accuracy"]),
                      "learning_rate": float(lr_fn(step - 1)),
                      "grad_norm": float(m["grad_norm"]), "skipped": int(m["skipped"]),
                      **({"img_per_s": rate} if step == done else {})})
    steps_per_s = len(pending) / dt
    eta = (total - done) / max(steps_per_s, 1e-9)
    last = host[-1]
    log(f"step {done}/{total}  loss {float(last['train_loss']):.4f}  "
        f"acc {float(last['train_accuracy']):.3f}  lr {float(lr_fn(done - 1)):.3g}  "
        f"{rate:,.0f} img/s  ETA {_fmt_time(eta)}")


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
    from jaxvision.preemption import exit_on_signals
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
        log(json.dumps(result))

    from jaxvision.experiment_configs import resolve_command_line  # --config NAME
    app.run(main, argv=resolve_command_line(argv))


if __name__ == "__main__":
    cli()
