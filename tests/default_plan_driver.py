"""Run in a process of its own (one CPU device, no JAXVISION_CONV_IMPL): whole-model forward
and gradients of a few families through the default ``auto`` convolution plan, recorded as
traced, and the same computation with ``JAXVISION_CONV_IMPL=lax``, both against a float64
computation (``lax``, x64).  Prints one JSON line per model: the plan forms that ran and, per
tensor, the relative errors of each float32 path."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxvision  # noqa: E402
from jaxvision.layers import conv_impl  # noqa: E402

FORMS = []
_plan = conv_impl.conv_plan


def _recording_plan(*args, **kwargs):
    p = _plan(*args, **kwargs)
    FORMS.append(tuple(p))
    return p


conv_impl.conv_plan = _recording_plan


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def run(name, hw, batch):
    model = jaxvision.create_model(name)
    c = jaxvision.model_cfg(name)["input_size"][2]
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, hw, hw, c)), jnp.float32)
    v = jax.jit(lambda x: model.init(jax.random.key(0), x))(x)
    params, rest = v["params"], {k: t for k, t in v.items() if k != "params"}
    w = jnp.asarray(np.random.default_rng(1).standard_normal((batch, model.num_classes)),
                    jnp.float32)

    def step(model, p, rest, x, w):  # training-mode forward, gradients wrt parameters, input
        def loss(p, x):
            out, _ = model.apply({"params": p, **rest}, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(1)})
            return (out * w).sum(), out
        (_, out), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(p, x)
        return out, grads

    def flat(result):  # logits, input gradient, then every parameter gradient by name
        out, (gp, gx) = result
        return {"logits": out, "input_grad": gx, **{
            jax.tree_util.keystr(k): g for k, g in jax.tree_util.tree_leaves_with_path(gp)}}

    results, forms = {}, {}
    for impl in ("auto", "lax"):
        os.environ["JAXVISION_CONV_IMPL"] = impl  # read at trace time
        FORMS.clear()
        out = jax.jit(lambda *a: step(model, *a))(params, rest, x, w)  # traced anew
        results[impl] = flat(jax.device_get(out))
        forms[impl] = sorted({f for p in FORMS for f in p})
    # the truth both float32 paths are measured against: XLA's convolutions in float64
    with jax.enable_x64(True):
        m64 = jaxvision.create_model(name, dtype=jnp.float64)
        f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
        out = jax.jit(lambda *a: step(m64, *a))(f64(params), f64(rest), f64(x), f64(w))
        truth = flat(jax.device_get(out))
    # per tensor: [auto vs float64, lax vs float64, auto vs lax]
    errors = {k: [rel(results["auto"][k], truth[k]), rel(results["lax"][k], truth[k]),
                  rel(results["auto"][k], results["lax"][k])] for k in truth}
    print(json.dumps({"model": name, "devices": jax.device_count(), "forms": forms["auto"],
                      "lax_forms": forms["lax"], "errors": errors}), flush=True)


# Scaled-down thresholds of the CPU rule (``--small``): the size limits above which ``auto``
# takes oneDNN's primitives or Winograd are set for ImageNet-size convolutions; lowered, the
# same decisions are taken inside tiny models.
SMALL = {"onednn_min_macs": 0, "onednn_keep_winograd_min_channels": 16, "winograd_min_macs": 0,
         "winograd_min_side": 4, "winograd_min_channels": 8, "onednn_winograd_min_macs": 0,
         "onednn_winograd_min_channels": 16, "onednn_winograd_min_side": 4}

if __name__ == "__main__":
    if sys.argv[1] == "--small":
        conv_impl.THRESHOLDS.update(SMALL)
        del sys.argv[1]
    for spec in sys.argv[1:]:
        name, hw, batch = spec.split(":")
        run(name, int(hw), int(batch))
