"""Start training from other weights: ``config.pretrained`` or ``config.init_from``.

Only parameters and batch statistics are taken, never optimizer state, so the new run may
use any optimizer.  Entries whose path and shape the new model shares are copied; the others
(the classifier, when the number of classes differs) keep their fresh initialisation, and one
log line names them.

* ``config.pretrained``: ``"default"`` (timm's default tag for ``config.model``), a tag such as
  ``"timm/resnet50.a1_in1k"``, or a ``.safetensors``/``.pth`` path (``jaxvision.pretrained``).
* ``config.init_from``: a jaxvision workdir, its ``checkpoints`` folder or one step folder.
"""
from __future__ import annotations

import numpy as np
from flax import traverse_util


class FineTuneError(ValueError):
    """Weights to start from that do not fit the model being trained."""


def source_variables(config) -> tuple[dict, str]:
    """Flat ``{(collection, ...): array}`` of the weights to start from, and their name."""
    if config.pretrained and config.init_from:
        raise FineTuneError("set config.pretrained or config.init_from, not both")
    if config.pretrained:
        from jaxvision import pretrained
        value = config.pretrained
        value = True if str(value).lower() in ("default", "true", "1") else value
        kwargs = {k: v for k, v in dict(config.model_kwargs).items() if k != "dtype"}
        flat, _, _ = pretrained.converted(config.model, value, **kwargs)
        return flat, f"pretrained {config.pretrained}"
    from jaxvision import checkpoint as ckpt
    variables, meta = ckpt.restore_variables(config.init_from)
    if meta.get("model") not in (None, config.model):
        raise FineTuneError(f"init_from {config.init_from} holds a {meta['model']!r} model, "
                            f"not {config.model!r}")
    return traverse_util.flatten_dict(variables), f"init_from {config.init_from}"


def merge(fresh: dict, source: dict, what: str, log) -> dict:
    """``fresh`` (this model's initial ``{'params', 'batch_stats'}``) with every entry of
    ``source`` that has the same path and shape.  Refuses a source that shares only a few."""
    flat = traverse_util.flatten_dict(fresh)
    kept, new = {}, []
    for k, v in flat.items():
        s = source.get(k)
        if s is not None and tuple(np.shape(s)) == tuple(v.shape):
            kept[k] = np.asarray(s, v.dtype)
        else:
            kept[k] = v
            new.append("/".join(k))
    if len(new) * 2 > len(flat):
        raise FineTuneError(f"{what} fits only {len(flat) - len(new)} of the model's "
                            f"{len(flat)} variables (e.g. {', '.join(new[:3])} differ): "
                            f"weights of another model?")
    if new:
        log(f"Initialised from {what}; newly initialised (not in the source, or another "
            f"shape): {', '.join(new)}")
    else:
        log(f"Initialised from {what}")
    return traverse_util.unflatten_dict(kept)


def initialise(state, config, log):
    """``state`` with parameters and batch statistics taken from the configured source."""
    import jax
    source, what = source_variables(config)
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    merged = merge({k: v for k, v in fresh.items() if v}, source, what, log)
    params = jax.device_put(merged["params"], jax.tree.map(lambda a: a.sharding, state.params))
    stats = state.batch_stats
    if "batch_stats" in merged:
        stats = jax.device_put(merged["batch_stats"],
                               jax.tree.map(lambda a: a.sharding, state.batch_stats))
    return state.replace(params=params, batch_stats=stats,
                         ema_params=params if config.ema_decay else state.ema_params)
