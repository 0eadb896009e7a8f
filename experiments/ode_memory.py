"""Memory of the ODE block's gradient: adjoint method vs backprop through the solver.

    python experiments/ode_memory.py [--batch 128] [--width 64] [--size 6]

Compiles the gradient of the ODE block of ``odenet_mnist`` (a (B, 6, 6, 64) state, as
after its downsampling stem) for fixed-step RK4 with 1..64 steps and reports XLA's
temporary buffer size (``compiled.memory_analysis().temp_size_in_bytes``): the peak
working memory of the computation beyond its inputs and outputs.  Backprop through the
solver stores the states of every step, so its memory grows linearly with the number of
steps; the adjoint method recomputes the trajectory backwards and stays flat (Chen et
al., 2018, section 2).  The adaptive dopri5 adjoint used by ``odenet_mnist`` is shown for
reference.  Nothing is executed (the gradients are only compiled), so it runs on any
backend.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jaxvision.models.odenet import ODEBlock


def temp_bytes(block: ODEBlock, x, params) -> int:
    def loss(p, x):
        return jnp.sum(jnp.square(block.apply({"params": p}, x)))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    args = parser.parse_args(argv)

    x = jax.ShapeDtypeStruct((args.batch, args.size, args.size, args.width), jnp.float32)
    params = jax.eval_shape(lambda x: ODEBlock().init(jax.random.key(0), x)["params"], x)
    state_mib = args.batch * args.size * args.size * args.width * 4 / 2**20
    print(f"device: {jax.devices()[0].device_kind}; ODE state {x.shape} = {state_mib:.2f} MiB")
    print(f"{'RK4 steps':>9} | {'f evals':>7} | {'backprop MiB':>12} | {'adjoint MiB':>11}")
    print("-" * 50)
    for n in args.steps:
        bp = temp_bytes(ODEBlock("rk4", adjoint=False, num_steps=n), x, params)
        adj = temp_bytes(ODEBlock("rk4", adjoint=True, num_steps=n), x, params)
        print(f"{n:>9} | {4 * n:>7} | {bp / 2**20:>12.2f} | {adj / 2**20:>11.2f}")
    dopri = temp_bytes(ODEBlock("dopri5", adjoint=True), x, params)
    print(f"dopri5 (adaptive, rtol=atol=1e-3) adjoint: {dopri / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
