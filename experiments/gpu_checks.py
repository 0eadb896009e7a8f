"""Numerical checks on a GPU: jaxvision against timm/PyTorch, and bfloat16 against float32.

    python experiments/gpu_checks.py            # prints one line per check, then a summary
    python experiments/gpu_checks.py --smoke-only   # just check 1 below

Run before ``experiments/gpu_benchmark.sh`` on a CUDA machine with jax[cuda], torch and timm:

1. smoke: a jitted forward/backward of a small ResNet on the GPU (exit status 3 if it fails,
   so a driver script can try other package versions);
2. for ``resnet50`` and ``vit_base_patch16_224`` with random timm weights converted by
   :func:`jaxvision.convert.from_torch`: the relative difference ``|a - b| / |b|`` of the
   logits of jaxvision against timm, both in float32 and both in bfloat16 (autocast for
   PyTorch), and of each framework's bfloat16 against its own float32;
3. cuDNN's fused attention (what :func:`jaxvision.layers.attention_vit.attention_impl`
   picks on such GPUs) against XLA's, values and gradients, in bfloat16, each measured
   against XLA's attention in float32.

A check passes under a bound set by the arithmetic: float32 on these GPUs runs matrix
products in TF32 (XLA's and cuDNN's defaults), so float32 logits agree to ~1e-3, bfloat16 to
~1e-2.  Nothing here is timed.
"""
from __future__ import annotations

import sys
import traceback

import numpy as np

RESULTS: list[tuple[str, float, float]] = []  # (check, measured, bound)
TORCH_DEVICE = "cuda"  # "cpu" with --cpu-dry-run, which runs the code paths on the CPU


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def record(name: str, value: float, bound: float) -> None:
    RESULTS.append((name, value, bound))
    print(f"{'ok  ' if value <= bound else 'FAIL'} {name}: {value:.2e} (bound {bound:.0e})",
          flush=True)


def smoke() -> None:
    import jax
    import jax.numpy as jnp

    from jaxvision import create_model

    print("jax", jax.__version__, "devices", jax.devices(), flush=True)
    if jax.default_backend() != "gpu" and TORCH_DEVICE == "cuda":
        raise RuntimeError(f"JAX backend is {jax.default_backend()!r}, not 'gpu'")
    model = create_model("resnet18", num_classes=10)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)

    @jax.jit
    def loss_and_grad(params):
        def loss(p):
            out, _ = model.apply({**variables, "params": p}, x, train=True,
                                 mutable=["batch_stats"])
            return jnp.mean(out ** 2)
        return jax.value_and_grad(loss)(params)

    value, grads = loss_and_grad(variables["params"])
    if not np.isfinite(float(value)) or not all(
            bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)):
        raise RuntimeError("non-finite loss or gradient in the smoke test")
    print(f"smoke: resnet18 train-mode value and grad on {jax.devices()[0].device_kind}: "
          f"loss {float(value):.4g}", flush=True)


def versus_timm(name: str, batch: int = 8) -> None:
    import jax
    import jax.numpy as jnp
    import timm
    import torch

    from jaxvision import create_model
    from jaxvision.convert import from_torch

    torch.manual_seed(0)
    tm = timm.create_model(name, pretrained=False).to(TORCH_DEVICE).eval()
    # Random BatchNorm statistics, so that eval-mode normalisation is exercised too.
    with torch.no_grad():
        for m in tm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sd = {k: v.detach().cpu() for k, v in tm.state_dict().items()}
    variables = from_torch(name, sd)
    x = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(TORCH_DEVICE)
    with torch.no_grad():
        t32 = tm(xt).float().cpu().numpy()
        with torch.autocast(TORCH_DEVICE, dtype=torch.bfloat16):
            t16 = tm(xt).float().cpu().numpy()
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = create_model(name, dtype=dtype)
        fn = jax.jit(lambda v, a, m=model: m.apply(v, a, train=False))
        outs[dtype] = np.asarray(fn(variables, jnp.asarray(x)).astype(jnp.float32))
    record(f"{name} float32: jaxvision vs timm", rel(outs[jnp.float32], t32), 1e-2)
    record(f"{name} bfloat16: jaxvision vs timm (autocast)", rel(outs[jnp.bfloat16], t16), 5e-2)
    record(f"{name} bfloat16 vs float32, jaxvision", rel(outs[jnp.bfloat16], outs[jnp.float32]),
           5e-2)
    record(f"{name} bfloat16 vs float32, timm", rel(t16, t32), 5e-2)
    del tm
    if TORCH_DEVICE == "cuda":
        torch.cuda.empty_cache()


def fused_attention() -> None:
    import jax
    import jax.numpy as jnp

    from jaxvision.layers.attention_vit import attention_impl, cudnn_attention

    shape = (8, 197, 12, 64)  # ViT-B/16 at 224: 196 patches + class token, 12 heads of 64
    keys = jax.random.split(jax.random.key(2), 4)
    q, k, v, ct = (jax.random.normal(kk, shape, jnp.float32) for kk in keys)
    chosen = attention_impl(q.astype(jnp.bfloat16))
    print(f"attention_impl picks {chosen!r} for bfloat16 on this GPU", flush=True)

    def value_and_grads(impl, dtype):
        def f(q, k, v):
            q, k, v = (a.astype(dtype) for a in (q, k, v))
            # The library's cuDNN path (it pads ViT's odd token count), or XLA's attention.
            out = (cudnn_attention(q, k, v) if impl == "cudnn" else
                   jax.nn.dot_product_attention(q, k, v, implementation=impl))
            return jnp.sum(out.astype(jnp.float32) * ct), out
        (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
            q, k, v)
        return [np.asarray(a.astype(jnp.float32)) for a in (out, *grads)]

    ref = value_and_grads("xla", jnp.float32)
    xla16 = value_and_grads("xla", jnp.bfloat16)
    cudnn16 = value_and_grads("cudnn" if TORCH_DEVICE == "cuda" else "xla", jnp.bfloat16)
    for i, what in enumerate(("output", "dq", "dk", "dv")):
        e_cudnn, e_xla = rel(cudnn16[i], ref[i]), rel(xla16[i], ref[i])
        print(f"     attention {what}: bf16 XLA {e_xla:.2e}, bf16 cuDNN {e_cudnn:.2e} "
              "(each against float32 XLA)", flush=True)
        # The fused kernel must be no less accurate than XLA's own bfloat16 attention.
        record(f"cuDNN attention {what} (bf16) vs float32", e_cudnn, max(2 * e_xla, 1e-2))


def main(argv: list[str]) -> int:
    global TORCH_DEVICE
    batch = 8
    if "--cpu-dry-run" in argv:  # exercise every code path on a machine without a GPU
        TORCH_DEVICE, batch = "cpu", 1
    try:
        smoke()
    except Exception:  # noqa: BLE001 - report and let the caller try other packages
        traceback.print_exc()
        return 3
    if "--smoke-only" in argv:
        return 0
    for check in (lambda: versus_timm("resnet50", batch),
                  lambda: versus_timm("vit_base_patch16_224", batch), fused_attention):
        try:
            check()
        except Exception:  # noqa: BLE001 - one failing check must not hide the others
            traceback.print_exc()
            RESULTS.append(("exception", float("nan"), 0.0))
    failed = [r for r in RESULTS if not r[1] <= r[2]]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
