"""``jit_o0``: ``jax.jit`` for the programs a test compiles in its own process and runs once.

Such a program (a whole model's gradient, an equivalence check's forward) spends most of its
test in XLA's compiler, and a third to half of that in LLVM optimising loops that then run a
single time.  Compiled at LLVM -O0 (``xla_backend_optimization_level=0``, for this program
only) the same float32 computation compiles about 40% faster (the tiny-variant training
steps: 349 s -> 198 s of the suite on two workers).  Not for float64 or bfloat16 programs,
which ran slower at -O0 than they compiled faster (the float64 training-equivalence tests:
447 s -> 511 s of worker time); nor for what the tests run as users do (training drivers,
entry points, ``test_default_plan``), which keep XLA's defaults.
"""
from __future__ import annotations

import jax

O0 = {"xla_backend_optimization_level": 0}


def jit_o0(fun, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` compiled at -O0 for each call's argument shapes."""
    jitted = jax.jit(fun, **jit_kwargs)
    compiled = {}

    def call(*args, **kwargs):
        key = jax.tree.structure((args, kwargs)), tuple(
            (getattr(a, "shape", None), str(getattr(a, "dtype", type(a))))
            for a in jax.tree.leaves((args, kwargs)))
        if key not in compiled:
            compiled[key] = jitted.lower(*args, **kwargs).compile(compiler_options=O0)
        return compiled[key](*args, **kwargs)

    return call
