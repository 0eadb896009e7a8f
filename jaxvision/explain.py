"""Which kernel each convolution of a model gets, and why.

    python -m jaxvision.explain --model resnet50 --input 224 --batch 32 [--conv auto]

traces the model's forward pass on shapes alone (nothing is compiled or run) and prints,
for every convolution, its shape, its multiply-adds and the formulation of its three passes
(forward / input gradient / kernel gradient) on this process's platform and device count,
with the reason the plan was chosen.  The plan of a convolution is fixed when it is traced,
from the setting in effect (``config.kernels.conv``, :mod:`jaxvision.kernels`), the
platform, the number of devices (oneDNN's primitives need a single one) and the
convolution's geometry (:func:`jaxvision.layers.conv_impl.conv_plan`).
"""
from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import kernels
from jaxvision.layers import conv_impl
from jaxvision.registry import create_model, model_cfg

FORMS = {"lax": "XLA conv", "im2col": "im2col GEMM", "shift": "per-tap GEMMs",
         "winograd2": "Winograd F(2x2)", "winograd4": "Winograd F(4x4)",
         "onednn": "oneDNN primitive"}


def _why_rule(g, plan, in_loop: bool) -> str:
    """What in the geometry sent the CPU rule to its non-native forms."""
    notes = []
    if conv_impl.depthwise(g):
        notes.append("depthwise: one broadcast multiply per tap (XLA's kernel is slow)")
    elif g.groups != 1:
        notes.append("grouped: XLA's kernel")
    elif g.kh * g.kw == 1 and "shift" in plan:
        notes.append("1x1: one GEMM")
    if "im2col" in plan:
        notes.append("small output map or small strided input: XLA's kernel is slow there")
    if any(f.startswith("winograd") for f in plan):
        notes.append("3x3 stride-1: Winograd's fewer multiplies pay at this size")
    if in_loop and "shift" in plan[1:]:
        notes.append("in a loop body: XLA's native gradients are slow there")
    elif max(g.strides) > 1 and "shift" in plan and g.kh * g.kw > 1:
        notes.append("strided: gradients tap by tap")
    if plan == conv_impl.Plan("lax", "lax", "lax"):
        notes.append("XLA's kernel has no known slow case here")
    return "; ".join(notes)


def reason(r: dict) -> str:
    """One line saying why record ``r`` (from :func:`conv_impl.recording`) got its plan."""
    impl, g, plan, chosen = r["impl"], r["geometry"], r["plan"], r["chosen"]
    if isinstance(impl, conv_impl.Plan):
        return "a Plan passed by the caller"
    if impl == "lax":
        return "kernels.conv=lax: XLA's convolution"
    if g is None:
        return "outside the rule (dilated input, 3-D or mixed/integer dtypes): XLA's convolution"
    if impl == "matmul":
        return "kernels.conv=matmul: every pass as matrix products"
    if r["platform"] != "cpu":
        return f"{r['platform']}: the platform's own convolution (no CPU slow cases)"
    macs = conv_impl.multiply_adds(g)
    threshold = conv_impl.THRESHOLDS["onednn_min_macs"]
    if "onednn" in chosen:
        why = ("kernels.conv=onednn" if impl == "onednn" else
               f"oneDNN primitives: one device and {macs / 1e9:.2f}G >= {threshold / 1e9:g}G "
               f"multiply-adds")
        if any(f.startswith("winograd") for f in chosen):
            why += "; Winograd kept where the CPU rule uses it (many channels)"
    else:
        why = f"CPU rule ({conv_impl.cpu_conv_library()} library)"
        if impl == "auto" and conv_impl.onednn_applies(g):
            if jax.device_count() > 1:
                why += f"; {jax.device_count()} devices, so no oneDNN primitives"
            elif macs < threshold:
                why += f"; {macs / 1e9:.2f}G < {threshold / 1e9:g}G multiply-adds for oneDNN"
        detail = _why_rule(g, chosen, r["in_loop"])
        why += f": {detail}" if detail else ""
    if plan != chosen:
        why += f"; {r['dtype']}" + (" / grouped" if g.groups != 1 else "") + \
            ": Winograd and oneDNN forms fall back to XLA's kernel"
    return why


def explain(model_name: str, input_size: int | None = None, batch: int = 32,
            conv: str = "", dtype=jnp.float32, **model_kwargs) -> list[dict]:
    """Every convolution of ``model_name``'s forward pass at this batch and input size,
    traced on shapes alone: ``[{"module", "shape", "kernel", "stride", "groups", "macs",
    "plan", "reason"}, ...]`` in call order."""
    cfg = model_cfg(model_name)
    h = w = input_size or cfg["input_size"][0]
    c = cfg["input_size"][2]
    model = create_model(model_name, dtype=dtype, **model_kwargs)
    x = jax.ShapeDtypeStruct((batch, h, w, c), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    stack, modules = [], []

    with kernels.use(conv=conv), conv_impl.recording() as records:
        start = 0

        def tagging(next_fun, args, kwargs, context):
            nonlocal start
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            stack.append("/".join(context.module.path))
            try:
                return next_fun(*args, **kwargs)
            finally:
                for _ in range(len(records) - start):
                    modules.append(stack[-1])
                start = len(records)
                stack.pop()

        with nn.intercept_methods(tagging):
            jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    out = []
    for module, r in zip(modules, records):
        g = r["geometry"]
        out.append({
            "module": module or model_name,
            "shape": (f"{g.h}x{g.w}x{g.c} -> {g.ho}x{g.wo}x{g.o}" if g is not None
                      else f"{r['lhs']} * {r['rhs']}"),
            "kernel": f"{g.kh}x{g.kw}" if g is not None else "",
            "stride": g.strides[0] if g is not None else 0,
            "groups": g.groups if g is not None else 1,
            "macs": conv_impl.multiply_adds(g) if g is not None else 0,
            "plan": tuple(r["plan"]),
            "reason": reason(r),
        })
    return out


def format_table(rows: list[dict]) -> str:
    head = ("module", "in -> out (per image)", "k", "s", "MMACs", "fwd / dgrad / wgrad", "why")
    body = [(r["module"], r["shape"], r["kernel"], str(r["stride"]), f"{r['macs'] / 1e6:,.0f}",
             " / ".join(FORMS.get(f, f) for f in r["plan"]), r["reason"]) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)] if body else []
    fmt = "  ".join("{:<%d}" % w_ for w_ in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*row) for row in (head, *body))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m jaxvision.explain",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--input", type=int, default=None, help="square input size (default: "
                   "the model's)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--conv", default="", choices=("",) + kernels.CONV_IMPLS,
                   help="kernels.conv to explain (default: the setting in effect)")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    from jaxvision.backends.cpu import configure_cpu_convolutions
    configure_cpu_convolutions()  # as the training entry point does, before JAX starts
    rows = explain(args.model, args.input, args.batch, args.conv)
    size = args.input or model_cfg(args.model)["input_size"][0]
    print(f"{args.model}, batch {args.batch}, input {size}, kernels.conv="
          f"{args.conv or kernels.conv()}, {jax.default_backend()} x {jax.device_count()} "
          f"device(s), {len(rows)} convolutions, "
          f"{sum(r['macs'] for r in rows) / 1e9:.2f}G multiply-adds")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
