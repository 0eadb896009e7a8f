"""The compiled update step of ``jaxvision.train``: its state, the training-mode forward pass
(auxiliary losses, per-group batch norm) and ``make_train_step``, the function that
``train_and_evaluate`` jits with the run's shardings."""
from __future__ import annotations

import inspect
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxvision import evaluate as evaluation
from jaxvision import losses


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


def with_distortion(mode: str, augment_fn):
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
            batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(new_opt, state.opt_state),
            ema_params=ema, nonfinite=jnp.where(ok, 0, state.nonfinite + 1),
            skipped_total=state.skipped_total + jnp.where(ok, 0, 1))
        acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        metrics = {"train_loss": loss, "train_accuracy": acc, "grad_norm": grad_norm,
                   "skipped": 1 - ok.astype(jnp.int32)}
        return new_state, metrics

    return train_step
