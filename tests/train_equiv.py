"""Training-mode comparison of a jaxvision model with its torch reference (timm/torchvision):
one forward with batch statistics, the running statistics it updates, and the gradients of
a fixed loss with respect to the input and every parameter.

Gradients are mapped into Flax layout by the model's own converter: every converter is a
linear rearrangement (transposes, reshapes), so ``from_torch`` applied to a state dict of
*gradients* gives the gradient tree of the Flax parameters.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _no_dropout_(tmodel):
    for m in tmodel.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return tmodel


def _bn_counts(tmodel, x):
    """Elements per channel each BatchNorm normalises over in one forward (N*H*W)."""
    counts, hooks = {}, []
    for name, m in tmodel.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: counts.__setitem__(
                    name, inp[0].numel() // inp[0].shape[1])))
    with torch.no_grad():
        tmodel.eval()(x)
    for h in hooks:
        h.remove()
    return counts


def rel_err(a, b, floor: float = 1e-12) -> float:
    """``max |a - b| / max |b|``; a reference smaller than ``floor`` counts as ``floor``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor))


def _from_torch(name, state_dict, input_size):
    """``from_torch`` keeping the state dict's precision (it casts to float32)."""
    from flax import traverse_util

    from jaxvision.convert import convert_flat
    return traverse_util.unflatten_dict(convert_flat(name, state_dict, input_size=input_size))


def convert(name, state_dict, model):
    """``from_torch`` for an unregistered, shrunk ``model`` of family ``name``: the family's
    converter, with every torch key consumed and every Flax variable filled."""
    from flax import traverse_util

    from jaxvision.convert import Converter, find_converter
    c = Converter(state_dict)
    find_converter(name)(c, model)
    assert not c.missing and not set(c.sd) - c.used, (c.missing, set(c.sd) - c.used)
    return traverse_util.unflatten_dict(dict(c.out))


def compare_training_step(name, tmodel, input_hw, batch=2, seed=0, model=None,
                          float64=False):
    """jaxvision ``name`` (or ``model``, a shrunk module of that family) on ``tmodel``'s
    converted randomised weights against ``tmodel`` in training mode: returns the relative
    errors of the logits, input gradient, every parameter gradient and running statistic.

    ``float64``: both sides compute in double precision (torch's model in float64, the Flax
    model cloned with ``dtype=float64`` under ``jax.enable_x64``).  For networks whose
    gradients in float32 depend on rounding (max-pooling picks one of two nearly equal inputs
    differently when either moves by an ulp), so that float32 torch differs from float64
    torch by as much as from jaxvision."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    import jaxvision
    from tests.torch_ref import randomize_

    if float64:
        with jax.enable_x64(True):
            return compare_training_step(name, tmodel.double(), input_hw, batch, seed,
                                         model, float64=None)
    dt = np.float64 if float64 is None else np.float32
    randomize_(tmodel, seed)
    _no_dropout_(tmodel)
    chans = jaxvision.model_cfg(name)["input_size"][2]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_hw, chans)).astype(dt)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    input_size = (*input_hw, chans)
    # cloned: numpy views of torch's buffers would follow their in-place training update
    cloned = {k: v.clone() for k, v in tmodel.state_dict().items()}
    variables = (_from_torch(name, cloned, input_size) if model is None
                 else convert(name, cloned, model))
    bn_n = _bn_counts(tmodel, xt)

    # --- torch: one training-mode forward and backward ---------------------------------
    old_sd = {k: v.clone() for k, v in tmodel.state_dict().items()}
    tmodel.train()
    xt.requires_grad_(True)
    logits_t = tmodel(xt)
    w = torch.from_numpy(rng.standard_normal(tuple(logits_t.shape)).astype(dt))
    (logits_t * w).sum().backward()
    params_t = dict(tmodel.named_parameters())
    grads_sd = {k: (params_t[k].grad if params_t[k].grad is not None
                    else torch.zeros_like(params_t[k])) if k in params_t else v
                for k, v in tmodel.state_dict().items()}
    # torch updates running_var with the unbiased batch variance, Flax with the biased one
    # (n-1)/n of it; torch's momentum 0.1 is Flax's 0.9.  torch's update is re-expressed in
    # Flax's convention: keep = 1 - momentum; new = keep*old + (1-keep)*var.
    for prefix, n in bn_n.items():
        key, keep = f"{prefix}.running_var", 1.0 - tmodel.get_submodule(prefix).momentum
        with torch.no_grad():
            grads_sd[key] = keep * old_sd[key] + (grads_sd[key] - keep * old_sd[key]) * (n - 1) / n
    flax_ref = (_from_torch(name, grads_sd, input_size) if model is None
                else convert(name, grads_sd, model))

    # --- jax: the same step ------------------------------------------------------------
    model = jaxvision.create_model(name) if model is None else model
    if dt == np.float64:
        model = model.clone(dtype=jnp.float64)
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    wj = jnp.asarray(w.numpy())

    def loss(p, x):
        out, upd = model.apply({"params": p, **rest}, x, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.key(0)})
        return (out * wj).sum(), (out, upd)

    (_, (logits_j, upd)), (gp, gx) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
        params, jnp.asarray(x))
    errs = {"logits": rel_err(logits_j, logits_t.detach().numpy()),
            "input_grad": rel_err(gx, xt.grad.numpy().transpose(0, 2, 3, 1))}
    gp = traverse_util.flatten_dict(jax.device_get(gp), sep="/")
    gref = traverse_util.flatten_dict(flax_ref["params"], sep="/")
    assert gp.keys() == gref.keys()
    # Some gradients are zero in exact arithmetic (a convolution's bias right before a batch
    # norm: the norm subtracts it again); both sides then hold rounding noise.  Such a
    # tensor is measured against 1e-5 of the largest parameter gradient instead.
    floor = 1e-5 * max(float(np.max(np.abs(g))) for g in gref.values())
    errs["param_grad"] = {k: rel_err(gp[k], gref[k], floor) for k in gref}
    stats = traverse_util.flatten_dict(jax.device_get(upd.get("batch_stats", {})), sep="/")
    sref = traverse_util.flatten_dict(flax_ref.get("batch_stats", {}), sep="/")
    assert stats.keys() == sref.keys()
    errs["stats"] = {k: rel_err(stats[k], sref[k]) for k in sref}
    return errs
