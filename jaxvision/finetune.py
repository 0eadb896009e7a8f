"""Start training from other weights: ``config.pretrained`` or ``config.init_from``.

Only parameters and batch statistics are taken, never optimizer state, so the new run may
use any optimizer.  Every entry is copied except the classifier head's when the number of
classes differs: those keep their fresh initialisation, and one log line names them.  Any
other entry the source lacks or shapes differently is an error naming it and both shapes,
raised before anything is compiled (``check``).

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


def head_paths(model, input_shape) -> set:
    """Flat paths of the classifier head: the variables whose shape depends on the number of
    classes (found by shape alone, with ``jax.eval_shape``)."""
    from jaxvision.utils import variable_shapes

    def shapes(n):
        v = variable_shapes(model.clone(num_classes=n), input_shape)
        return {k: tuple(a.shape) for k, a in traverse_util.flatten_dict(dict(v)).items()}
    if not isinstance(getattr(model, "num_classes", None), int):
        return set()  # no class count to vary: no entry may differ
    a, b = shapes(model.num_classes), shapes(model.num_classes + 1)
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _misfits(fresh: dict, source: dict) -> list:
    """``(path, shape here, shape in the source or None)`` of the entries that do not fit."""
    out = []
    for k, v in fresh.items():
        s = source.get(k)
        if s is None or tuple(np.shape(s)) != tuple(v.shape):
            out.append((k, tuple(v.shape), None if s is None else tuple(np.shape(s))))
    return out


def check(config, model, input_shape, abstract) -> tuple[dict, str]:
    """The source's flat variables and name, once checked against the model to train (its
    abstract state): a misfit outside the classifier head is a ``FineTuneError`` naming each
    entry and both shapes.  Shapes only: nothing is compiled."""
    source, what = source_variables(config)
    fresh = traverse_util.flatten_dict(
        {k: v for k, v in (("params", abstract.params), ("batch_stats", abstract.batch_stats))
         if v})
    heads = head_paths(model, input_shape)
    bad = [m for m in _misfits(fresh, source) if m[0] not in heads]
    if bad:
        listing = "; ".join(f"{'/'.join(k)}: {here} here, "
                            f"{'absent' if there is None else there} in the source"
                            for k, here, there in bad[:8])
        more = f" (and {len(bad) - 8} more)" if len(bad) > 8 else ""
        raise FineTuneError(
            f"{what} does not fit {config.model}{dict(config.model_kwargs) or ''}: {listing}"
            f"{more}. Only the classifier head is re-initialised (for another number of "
            f"classes); the rest must match the source's architecture")
    return source, what


def merge(fresh: dict, source: dict, what: str, log) -> dict:
    """``fresh`` (this model's initial ``{'params', 'batch_stats'}``) with every entry of
    ``source`` that has the same path and shape; the others (the head, once ``check`` has
    passed) stay fresh and are named in one log line."""
    flat = traverse_util.flatten_dict(fresh)
    misfits = {k for k, _, _ in _misfits(flat, source)}
    kept = {k: v if k in misfits else np.asarray(source[k], v.dtype) for k, v in flat.items()}
    if misfits:
        log(f"Initialised from {what}; newly initialised (the classifier head, for another "
            f"number of classes): {', '.join(sorted('/'.join(k) for k in misfits))}")
    else:
        log(f"Initialised from {what}")
    return traverse_util.unflatten_dict(kept)


def initialise(state, config, log, checked: tuple[dict, str] | None = None):
    """``state`` with parameters and batch statistics taken from the configured source
    (``checked``: what ``check`` returned, else it is read here without the check)."""
    import jax
    source, what = checked or source_variables(config)
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    merged = merge({k: v for k, v in fresh.items() if v}, source, what, log)
    params = jax.device_put(merged["params"], jax.tree.map(lambda a: a.sharding, state.params))
    stats = state.batch_stats
    if "batch_stats" in merged:
        stats = jax.device_put(merged["batch_stats"],
                               jax.tree.map(lambda a: a.sharding, state.batch_stats))
    return state.replace(params=params, batch_stats=stats,
                         ema_params=params if config.ema_decay else state.ema_params)
