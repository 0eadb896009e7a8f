"""ResNet-18's convolutions one by one, jaxvision's dispatch against PyTorch's ``conv2d``.

    python experiments/conv_vs_torch.py --resolution 224 [--batch 32] [--repeats 5]

For each distinct conv of ResNet-18 at the given input size (stem, the 3x3 convs of each
stage, the strided 3x3 and 1x1 convs that open stages 2-4), the forward pass, the input
gradient and the kernel gradient are timed: jaxvision's ``conv_general_dilated`` with the
CPU rule's plan (``impl="auto"``), each pass compiled on its own, and PyTorch's
``torch.nn.functional.conv2d`` on channels-last tensors (forward alone; forward and
backward with only the kernel requiring a gradient; forward and backward with both, the
input gradient being the difference).  All of jaxvision's passes run first, then all of
PyTorch's, each after two warm-up calls: the two libraries' thread pools slow each other
down when their calls alternate.  Medians of ``--repeats`` calls, in milliseconds, and the
sums over the network (each conv times its count; the stem's input gradient, which neither
train step computes, left out of the sums).
"""
from __future__ import annotations

import argparse
import statistics
import time

from jaxvision.layers import conv_impl


def resnet18_convs(res: int):
    """(count, input side, C, O, kernel, stride, padding) of each distinct conv."""
    s = res // 4
    return [(1, res, 3, 64, 7, 2, 3), (4, s, 64, 64, 3, 1, 1),
            (1, s, 64, 128, 3, 2, 1), (1, s, 64, 128, 1, 2, 0), (3, s // 2, 128, 128, 3, 1, 1),
            (1, s // 2, 128, 256, 3, 2, 1), (1, s // 2, 128, 256, 1, 2, 0),
            (3, s // 4, 256, 256, 3, 1, 1), (1, s // 4, 256, 512, 3, 2, 1),
            (1, s // 4, 256, 512, 1, 2, 0), (3, s // 8, 512, 512, 3, 1, 1)]


def _median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    for name in ("batch", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.resolution < 32 or args.resolution % 32:
        raise SystemExit(f"--resolution must be a positive multiple of 32 (ResNet-18's "
                         f"stages halve the map five times), got {args.resolution}")
    library = conv_impl.configure_cpu_convolutions()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    n = args.batch
    rows = []
    for count, h, c, o, k, st, p in resnet18_convs(args.resolution):
        rng = np.random.default_rng(0)
        ho = (h + 2 * p - k) // st + 1
        x = rng.standard_normal((n, h, h, c)).astype(np.float32)
        w = (rng.standard_normal((k, k, c, o)) / np.sqrt(k * k * c)).astype(np.float32)
        g = rng.standard_normal((n, ho, ho, o)).astype(np.float32)

        def conv(a, b, st=st, p=p):
            return conv_impl.conv_general_dilated(
                a, b, (st, st), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

        xj, wj, gj = map(jnp.asarray, (x, w, g))
        passes = [jax.jit(conv),
                  jax.jit(lambda a, b, g: jax.vjp(lambda a: conv(a, b), a)[1](g)[0]),
                  jax.jit(lambda a, b, g: jax.vjp(lambda b: conv(a, b), b)[1](g)[0])]
        args_ = [(xj, wj), (xj, wj, gj), (xj, wj, gj)]
        ours = [_median_ms(lambda f=f, a=a: jax.block_until_ready(f(*a)), args.repeats)
                for f, a in zip(passes, args_)]

        cl = torch.channels_last
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=cl)
        gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        f = torch.nn.functional.conv2d

        def fwd(xt=xt, wt=wt, st=st, p=p):
            with torch.no_grad():
                f(xt, wt, stride=st, padding=p)

        def both(dx: bool, xt=xt, wt=wt, gt=gt, st=st, p=p):
            a = xt.detach().requires_grad_(dx)
            b = wt.detach().requires_grad_(True)
            f(a, b, stride=st, padding=p).backward(gt)

        t_fwd = _median_ms(fwd, args.repeats)
        t_w = _median_ms(lambda: both(False), args.repeats) - t_fwd
        t_dw = _median_ms(lambda: both(True), args.repeats) - t_fwd
        theirs = [t_fwd, t_dw - t_w, t_w]
        name = f"{k}x{k}/{st} {c}->{o} ({h}x{h})"
        rows.append({"conv": name, "count": count, "jaxvision_ms": ours, "torch_ms": theirs,
                     "plan": tuple(conv_impl.conv_plan(
                         conv_impl.Geometry(n, h, h, c, k, k, o, ho, ho, (st, st),
                                             ((p, p), (p, p)), (1, 1), 1),
                         conv_impl.requested_impl(), jax.default_backend()))})
    print(f"ResNet-18 convs, batch {n}, {args.resolution}x{args.resolution}, {library} "
          "convolutions; ms forward / input-grad / kernel-grad, medians:")
    total = np.zeros((2, 3))
    for r in rows:
        a, b = r["jaxvision_ms"], r["torch_ms"]
        print(f"  {r['conv']:26s} x{r['count']}  jaxvision {a[0]:7.1f} {a[1]:7.1f} {a[2]:7.1f}"
              f"  torch {b[0]:7.1f} {b[1]:7.1f} {b[2]:7.1f}  plan {'/'.join(r['plan'])}")
        dx = 0.0 if r["conv"].endswith(f"({args.resolution}x{args.resolution})") else 1.0
        total += r["count"] * np.array([[a[0], dx * a[1], a[2]], [b[0], dx * b[1], b[2]]])
    print(f"  sum (without the stem's input gradient): jaxvision "
          f"{' / '.join(f'{v:.0f}' for v in total[0])} = {total[0].sum():.0f} ms, torch "
          f"{' / '.join(f'{v:.0f}' for v in total[1])} = {total[1].sum():.0f} ms")
    return rows


if __name__ == "__main__":
    from jaxvision.allocator import reexec_with_allocator

    reexec_with_allocator()  # under tcmalloc where installed, as the benchmark runs
    main()
