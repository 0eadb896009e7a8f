"""Evaluation: single models with test-time crops, and ensembles / committees of checkpoints.

    python -m jaxvision.evaluate --workdirs /tmp/a,/tmp/b,/tmp/c [--eval_crops flip]

averages the softmax outputs of the newest checkpoint in each workdir (models may differ:
an ensemble across architectures, or an MCDNN committee of columns) on the eval split that
the first workdir's config names, and prints each member's and the ensemble's accuracy.

    python -m jaxvision.evaluate --workdir /tmp/a --config.dataset.eval_split=train_full

evaluates a run on another split or dataset: ``--config.dataset.<key>=<value>`` changes that
key of the first workdir's saved dataset config (only ``dataset`` keys may change).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import kernels, sharding
from jaxvision.data import loader, pipeline
from jaxvision.registry import create_model, model_cfg

CROPS = ("center", "flip", "shift", "ten_crop")


def normalize(images, mean, std, dtype):
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
        x = x / 255.0
    return ((x - mean) / std).astype(dtype)


def views(x, crops: str, crop_size: int | None = None):
    """Test-time views of a batch, stacked on a new leading axis."""
    if crops == "center":
        return x[None]
    if crops == "flip":
        from jaxvision.data.crops import flip_tta
        return flip_tta(x)
    if crops == "shift":
        from jaxvision.data.crops import shift_tta
        return shift_tta(x, 1)
    if crops == "ten_crop":
        from jaxvision.data.crops import ten_crop
        size = crop_size or int(round(x.shape[1] * 0.875))
        return ten_crop(x, size)
    raise ValueError(f"unknown eval_crops {crops!r}; choose one of {CROPS}")


def make_predict(model, mean, std, dtype, crops="center", crop_size=None):
    """``predict(variables, uint8 images) -> (probs, logits)`` averaged over the views."""

    def predict(variables, images):
        x = normalize(images, mean, std, dtype)
        v = views(x, crops, crop_size)
        logits = jax.vmap(lambda xx: model.apply(variables, xx, train=False))(v)
        logits = logits.astype(jnp.float32)
        if v.shape[0] == 1:
            return jax.nn.softmax(logits[0]), logits[0]
        probs = jnp.mean(jax.nn.softmax(logits), axis=0)
        return probs, jnp.log(jnp.clip(probs, 1e-12))

    return predict


def make_eval_step(predict, num_classes, loss_fn):
    def eval_step(variables, images, labels, weights):
        probs, logits = predict(variables, images)
        targets = jax.nn.one_hot(labels, num_classes)
        loss = loss_fn(logits, targets)
        correct = (jnp.argmax(probs, -1) == labels).astype(jnp.float32)
        return {"loss_sum": jnp.sum(loss * weights), "correct": jnp.sum(correct * weights),
                "count": jnp.sum(weights)}
    return eval_step


def iterate_split(split, batch: int, mesh, transform=None, workers: int = 0):
    """Global (images, labels, weights) arrays covering ``split`` once, padded to ``batch``.
    A streaming split is read by ``workers`` processes, through ``transform`` if given."""
    sh = sharding.batch_sharding(mesh)
    host = sharding.host_slice(batch)
    if split.in_memory:
        batches = ((split.images[i[host]], split.labels[i[host]], w[host])
                   for i, w in pipeline.eval_batches(len(split), batch))
    else:
        batches = loader.eval_iterator(split, batch, host, transform, workers)
    for x, y, w in batches:
        yield (sharding.global_array(x, sh), sharding.global_array(y.astype(np.int32), sh),
               sharding.global_array(w, sh))


def evaluate_split(eval_step, variables, split, batch: int, mesh, transform=None,
                   workers: int = 0) -> dict:
    outs = [eval_step(variables, images, labels, weights)
            for images, labels, weights in iterate_split(split, batch, mesh, transform, workers)]
    # Summed on the host, in order and in float32 as the device summed them before: an eager
    # add between two steps is one more device program beside the steps' collectives, and a
    # two-process evaluation hung with each process dispatching a different one of the two.
    totals = None
    for out in jax.device_get(outs):
        totals = out if totals is None else {k: totals[k] + out[k] for k in totals}
    n = float(totals["count"])
    return {"eval_loss": float(totals["loss_sum"]) / n,
            "eval_accuracy": float(totals["correct"]) / n, "eval_count": int(n)}


def predict_split(predict, variables, split, batch: int, mesh, transform=None,
                  workers: int = 0) -> np.ndarray:
    """Class probabilities for every example of ``split``, in order."""
    repl = sharding.replicated(mesh)
    fn = jax.jit(lambda v, x: predict(v, x)[0], out_shardings=repl)
    out = [np.asarray(fn(variables, images))
           for images, _, _ in iterate_split(split, batch, mesh, transform, workers)]
    return np.concatenate(out)[:len(split)]  # padding sits at the end of the last batch


# ------------------------------------------------------------------------------------------
# Checkpoints and ensembles
# ------------------------------------------------------------------------------------------

def run_config(workdir: str):
    """The config a training workdir's ``config.json`` records."""
    from jaxvision import checkpoint as ckpt
    from jaxvision.config import default_config

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ckpt.CheckpointError(f"{workdir} has no config.json: not a jaxvision workdir")
    config = default_config()
    with open(path) as f:
        saved = json.load(f)
    kwargs = saved.pop("model_kwargs", {}) or {}
    saved = {k: v for k, v in saved.items() if not k.startswith("_")}  # _history: a record
    config.update_from_flattened_dict(_flatten(saved))
    for k, v in kwargs.items():
        config.model_kwargs[k] = v
    return config


def load_run(workdir: str, ema: bool | None = None):
    """(config, model, variables) of the newest checkpoint in a training workdir; ``ema``
    picks the moving average of the weights (True) or the trained weights (False), by
    default as the run evaluated (``ema_decay`` and ``eval_with_ema``)."""
    from jaxvision import checkpoint as ckpt

    config = run_config(workdir)
    # the newest checkpoint that verifies; read-only: nothing in the workdir is written
    loaded = ckpt.load(workdir)
    if loaded is None:
        raise ckpt.CheckpointError(f"{workdir} holds no checkpoint")
    state, meta, _ = loaded
    num_classes = config.num_classes or meta["num_classes"]
    model = create_model(config.model, num_classes=num_classes, dtype=jnp.dtype(config.dtype),
                         **dict(config.model_kwargs))
    if ema is None:
        ema = bool(config.ema_decay and config.eval_with_ema)
    elif ema and not config.ema_decay:
        raise ValueError(f"{workdir} kept no moving average of its weights (ema_decay=0)")
    params = state["ema_params"] if ema else state["params"]
    return config, model, {"params": params, "batch_stats": state["batch_stats"]}


def check_views_fit(predict, variables, split, name: str, crops: str):
    """Fail before compiling when the test-time views have a size the model cannot take
    (a size-dependent model, e.g. dense layers after the convolutions, under ten_crop)."""
    import flax
    x = jax.ShapeDtypeStruct((1, *split.image_shape), jnp.uint8)
    try:
        jax.eval_shape(predict, variables, x)
    except flax.errors.ScopeParamShapeError as e:
        h, w = split.image_shape[:2]
        vh, vw = jax.eval_shape(lambda a: views(a, crops), x).shape[-3:-1]
        raise ValueError(
            f"{name} cannot take eval_crops={crops!r}: its views are {vh}x{vw} but the model "
            f"takes {h}x{w} inputs (its weights depend on the input size); use "
            f"eval_crops='center' or 'flip'") from e


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = tuple(v) if isinstance(v, list) else v
    return out


def ensemble_predictions(workdirs, crops: str | None = None, dataset=None,
                         batch_size: int | None = None, ema: bool | None = None) -> dict:
    """Class probabilities of an ensemble on one eval split: each member's (its newest
    checkpoint's softmax, averaged over its test-time views) and the ensemble's, their mean.
    ``ema``: see :func:`load_run`.  Each member is traced with the kernels its run recorded
    (``config.kernels``).
    Returns ``{"members": [(N, K), ...], "probs": (N, K), "labels": (N,)}``."""
    if not workdirs:
        raise ValueError("ensemble needs at least one workdir")
    mesh = sharding.make_mesh()
    runs = [load_run(w, ema) for w in workdirs]
    first = runs[0][0]
    ds_cfg = dataset or first.dataset
    members = []
    split = None
    for config, model, variables in runs:
        mcfg = model_cfg(config.model)
        if split is None:
            data = pipeline.load_datasets(ds_cfg, config.num_classes or None, mcfg["input_size"])
            # streaming images: the first member's eval transform, in worker processes
            _, eval_tf = loader.attach_transforms(data, ds_cfg, config.model, mcfg["input_size"])
            split = data.eval
        pipeline.validate_split(split, model.num_classes, mcfg["input_size"], "eval")
        mean = jnp.asarray(config.dataset.mean or mcfg["mean"], jnp.float32)
        std = jnp.asarray(config.dataset.std or mcfg["std"], jnp.float32)
        predict = make_predict(model, mean, std, jnp.dtype(config.dtype),
                               crops or config.eval_crops)
        batch = batch_size or config.eval_batch_size or config.batch_size
        sharding.check_global_batch(batch, mesh)
        check_views_fit(predict, variables, split, config.model, crops or config.eval_crops)
        with kernels.use(**kernels.from_config(config)):
            members.append(predict_split(predict, variables, split, batch, mesh, eval_tf,
                                         ds_cfg.workers))
    return {"members": members, "probs": np.mean(members, axis=0),
            "labels": np.asarray(split.labels)}


def ensemble(workdirs, crops: str | None = None, dataset=None, batch_size: int | None = None,
             ema: bool | None = None):
    """Average the softmax of the newest checkpoint of each workdir on one eval split.
    Returns ``{"members": [accuracy, ...], "ensemble_accuracy": ..., "count": N}``."""
    out = ensemble_predictions(workdirs, crops, dataset, batch_size, ema)
    labels = out["labels"]

    def accuracy(p):
        return float(np.mean(np.argmax(p, -1) == labels))
    return {"members": [accuracy(p) for p in out["members"]],
            "ensemble_accuracy": accuracy(out["probs"]), "count": len(labels)}


def dataset_overrides(argv) -> list[str]:
    """The ``dataset`` keys that ``--config.dataset.<key>`` arguments set; any other
    ``--config.`` key is a ``ValueError`` (the model and its training are the run's)."""
    keys = []
    for a in argv[1:]:
        if a == "--":
            break
        if a.startswith(("--config.", "-config.")):
            key = a.split("config.", 1)[1].split("=", 1)[0]
            if not key.startswith("dataset."):
                raise ValueError(f"--config.{key}: evaluation can change only config.dataset "
                                 f"keys (another split or dataset); use --eval_crops and "
                                 f"--batch_size for those settings")
            keys.append(key.split(".", 1)[1])
    return keys


def with_dataset(dataset, keys, parsed):
    """A copy of a run's ``dataset`` config with ``keys`` taken from ``parsed``."""
    ds = dataset.copy_and_resolve_references()
    with ds.unlocked():
        for key in keys:
            node, new = ds, parsed
            *parents, leaf = key.split(".")
            for p in parents:
                node, new = node[p], new[p]
            node[leaf] = new[leaf]
    return ds


def cli(argv=None):
    if argv is None:  # a command line, not a call from a program
        from jaxvision.allocator import reexec_with_allocator
        reexec_with_allocator()  # tcmalloc where installed: jaxvision/allocator.py
    import ml_collections
    from absl import app, flags
    from ml_collections import config_flags

    from jaxvision.config import default_config

    flags.DEFINE_list("workdirs", None, "Training workdirs whose newest checkpoints to combine.")
    flags.DEFINE_string("workdir", None, "One training workdir (instead of --workdirs).")
    flags.DEFINE_enum("eval_crops", None, list(CROPS), "Override the configs' eval_crops.")
    flags.DEFINE_integer("batch_size", None, "Eval batch size.")
    flags.DEFINE_enum("weights", None, ["ema", "trained"], "The moving average of the "
                      "weights or the trained weights (default: as each run evaluated).")
    config_flags.DEFINE_config_dict(
        "config", ml_collections.ConfigDict({"dataset": default_config().dataset}),
        "Only --config.dataset.<key>=<value>: evaluate on another split or dataset than the "
        "first workdir's.")
    from jaxvision.utils import absl_help_lists  # --help of the jaxvision-evaluate script
    absl_help_lists(flags.FLAGS, ["workdirs", "workdir", "eval_crops", "batch_size", "weights",
                                  "config"])
    import sys
    try:
        keys = dataset_overrides(sys.argv if argv is None else argv)
    except ValueError as e:
        print(f"Error: ValueError: {e}", file=sys.stderr, flush=True)
        sys.exit(1)

    def main(_):
        from absl import logging

        from jaxvision.backends.cpu import configure_cpu_convolutions
        configure_cpu_convolutions()  # XLA_FLAGS are read when JAX starts its backends
        logging.set_verbosity(logging.WARNING)
        f = flags.FLAGS
        workdirs = ([f.workdir] if f.workdir else []) + list(f.workdirs or [])
        if not workdirs:
            raise app.UsageError("give --workdir or --workdirs")
        dataset = (with_dataset(run_config(workdirs[0]).dataset, keys, f.config.dataset)
                   if keys else None)
        ema = None if f.weights is None else f.weights == "ema"
        print(json.dumps(ensemble(workdirs, f.eval_crops, dataset=dataset,
                                  batch_size=f.batch_size, ema=ema)))

    app.run(main, argv=argv)


if __name__ == "__main__":
    cli()


__all__ = ["check_views_fit", "dataset_overrides", "ensemble", "ensemble_predictions",
           "evaluate_split", "load_run", "make_eval_step", "make_predict", "predict_split",
           "run_config", "with_dataset"]
