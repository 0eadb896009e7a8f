"""Wall time of each pass of one convolution under each formulation of ``conv_impl``.

    python experiments/conv_passes.py --shapes 32x56x64x64,32x14x256x256 \
        [--forms lax,winograd2,winograd4] [--kernel 3] [--stride 1] [--padding P] \
        [--groups G|depthwise] [--repeats 3] [--interleave] [--loop STEPS]

A shape ``NxHxCxO`` is a batch of N square HxH maps with C input and O output channels;
the kernel is square with "same"-style padding ``(k - 1) // 2`` unless ``--padding`` says
otherwise; ``--groups`` makes it a grouped conv (``depthwise``: one group per input
channel).  For each formulation the forward pass, the input gradient and the kernel
gradient are compiled separately and timed (milliseconds, best of ``--repeats`` after one
warm-up) on the default device; with ``--interleave`` every pass of every form is compiled
first and then timed in turn for ``--repeats`` rounds, and the median is reported, which is
steadier on a shared machine.  These are the measurements behind the thresholds of
``conv_impl.choose_plan_cpu``; numbers from one process are comparable with each other,
not with another machine's.

``--loop STEPS`` instead times the gradient (input and kernel) of STEPS residual steps
``h + 0.1 tanh(conv(h))`` run by ``lax.scan`` and the same steps unrolled, the formulation
applying to both gradients (``auto``: the CPU rule, inside ``conv_impl.loop_body()`` for the
scan): what an ODE solver's loop pays per convolution.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.layers.conv_impl import FORMS, Plan, conv_general_dilated, loop_body


def best_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def _inputs(shape, kernel, groups=1):
    n, h, c, o = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, h, c)), jnp.float32)
    cg = c // groups
    w = jnp.asarray(rng.standard_normal((kernel, kernel, cg, o)) / np.sqrt(kernel * kernel * cg),
                    jnp.float32)
    return rng, x, w


def pass_times(shape, form: str, kernel: int, stride: int, repeats: int, padding=None,
               groups: int = 1):
    return tuple(best_ms(fn, *a, repeats=repeats)
                 for fn, a in pass_fns(shape, form, kernel, stride, padding, groups))


def interleaved_times(shape, forms, kernel: int, stride: int, repeats: int, padding=None,
                      groups: int = 1) -> dict:
    """{form: (forward, input-grad, kernel-grad)} medians in ms of ``repeats`` rounds, each
    round timing every pass of every form once, so that a slow spell of a shared machine
    falls on all forms alike rather than on whichever form it ran during."""
    fns = {form: pass_fns(shape, form, kernel, stride, padding, groups) for form in forms}
    for passes in fns.values():
        for fn, a in passes:
            jax.block_until_ready(fn(*a))
    times = {form: [[], [], []] for form in forms}
    for _ in range(repeats):
        for k in range(3):
            for form, passes in fns.items():
                fn, a = passes[k]
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*a))
                times[form][k].append((time.perf_counter() - t0) * 1e3)
    return {form: tuple(float(np.median(t)) for t in ts) for form, ts in times.items()}


def pass_fns(shape, form: str, kernel: int, stride: int, padding=None, groups: int = 1):
    """The compiled forward, input-gradient and kernel-gradient passes, each with its
    arguments."""
    rng, x, w = _inputs(shape, kernel, groups)
    p = (kernel - 1) // 2 if padding is None else padding
    plan = Plan(form, form, form)

    def conv(a, b):
        return conv_general_dilated(a, b, (stride, stride), ((p, p), (p, p)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=plan,
                                    feature_group_count=groups)

    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape), jnp.float32)
    fwd = jax.jit(conv)
    dgrad = jax.jit(lambda a, b, g: jax.vjp(lambda a: conv(a, b), a)[1](g)[0])
    wgrad = jax.jit(lambda a, b, g: jax.vjp(lambda b: conv(a, b), b)[1](g)[0])
    return (fwd, (x, w)), (dgrad, (x, w, ct)), (wgrad, (x, w, ct))


def loop_times(shape, form: str, kernel: int, steps: int, repeats: int, padding=None):
    """(scan, unrolled) ms of the gradient of ``steps`` residual conv steps."""
    _, x, w = _inputs(shape, kernel)
    if shape[2] != shape[3]:
        raise ValueError(f"--loop needs C == O, got {shape}")
    p = (kernel - 1) // 2 if padding is None else padding
    impl = "auto" if form == "auto" else Plan("lax", form, form)

    def conv(h, b):
        return conv_general_dilated(h, b, (1, 1), ((p, p), (p, p)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=impl)

    def scanned(h, b):
        def body(c, _):
            with loop_body():
                return c + 0.1 * jnp.tanh(conv(c, b)), None
        return jnp.sum(jax.lax.scan(body, h, jnp.arange(steps))[0] ** 2)

    def unrolled(h, b):
        for _ in range(steps):
            h = h + 0.1 * jnp.tanh(conv(h, b))
        return jnp.sum(h ** 2)

    grads = [jax.jit(jax.grad(fn, argnums=(0, 1))) for fn in (scanned, unrolled)]
    return tuple(best_ms(g, x, w, repeats=repeats) for g in grads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", required=True, help="comma-separated NxHxCxO")
    ap.add_argument("--forms", default="lax,winograd2,winograd4")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--padding", type=int, default=None)
    ap.add_argument("--groups", default="1", help="feature groups, or 'depthwise'")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop", type=int, default=0, metavar="STEPS")
    ap.add_argument("--interleave", action="store_true",
                    help="time the forms in turn, --repeats rounds, and report medians")
    args = ap.parse_args(argv)
    forms = args.forms.split(",")
    bad = [f for f in forms if f not in FORMS + (("auto",) if args.loop else ())]
    if bad:
        ap.error(f"unknown formulation(s) {bad}; choose from {list(FORMS)}")
    if args.groups != "depthwise" and not (args.groups.isdigit() and int(args.groups) > 0):
        ap.error(f"--groups {args.groups!r} is neither a positive integer nor 'depthwise'")
    if args.loop and args.groups != "1":
        ap.error("--loop times ungrouped convs")

    def groups_of(shape):
        return shape[2] if args.groups == "depthwise" else int(args.groups)

    shapes = []
    for s in args.shapes.split(","):
        try:
            shapes.append(tuple(int(v) for v in s.split("x")))
        except ValueError:
            ap.error(f"shape {s!r} is not NxHxCxO")
        if len(shapes[-1]) != 4:
            ap.error(f"shape {s!r} is not NxHxCxO")
        groups = groups_of(shapes[-1])
        if shapes[-1][2] % groups or shapes[-1][3] % groups:
            ap.error(f"--groups {args.groups}: {groups} does not divide the channels of {s}")
    if args.loop and args.interleave:
        ap.error("--interleave times the three passes, not --loop")
    if args.loop:
        if args.stride != 1:
            ap.error("--loop times stride-1 convs")
        print(f"device: {jax.devices()[0].device_kind}; ms for the gradient of {args.loop} "
              "steps: lax.scan / unrolled")
    else:
        print(f"device: {jax.devices()[0].device_kind}; ms forward / input-grad / kernel-grad")
    for shape in shapes:
        cells = []
        if args.interleave:
            medians = interleaved_times(shape, forms, args.kernel, args.stride, args.repeats,
                                        args.padding, groups_of(shape))
            cells = [f"{form} {f:.1f} / {d:.1f} / {w:.1f}"
                     for form, (f, d, w) in medians.items()]
        for form in [] if args.interleave else forms:
            if args.loop:
                sc, un = loop_times(shape, form, args.kernel, args.loop, args.repeats,
                                    args.padding)
                cells.append(f"{form} {sc:.1f} / {un:.1f}")
                continue
            f, d, w = pass_times(shape, form, args.kernel, args.stride, args.repeats,
                                 args.padding, groups_of(shape))
            cells.append(f"{form} {f:.1f} / {d:.1f} / {w:.1f}")
        print("x".join(map(str, shape)) + ": " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
