"""Small helpers shared across the package."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def variable_shapes(model, input_size, batch: int = 1):
    """All of a model's variables as ShapeDtypeStructs, traced with ``jax.eval_shape``
    (nothing is allocated or computed)."""
    h, w, c = input_size
    x = jax.ShapeDtypeStruct((batch, h, w, c), jnp.float32)
    # shapes do not depend on the generator; 'rbg' keys trace far fewer ops than threefry
    key = jax.random.key(0, impl="rbg")
    # nor on the convolution plan: lax's convolutions trace in one op each, the CPU
    # formulations in dozens (Winograd's transforms), so full-size models trace in about a
    # third less time (all registered models: 78 s -> 52 s on the development machine)
    from jaxvision import kernels
    with kernels.use(conv="lax"):
        return jax.eval_shape(lambda x: model.init(key, x, train=False), x)


# LLVM's -O3 (XLA's default backend level) spends most of the compile of a model's
# initialisation on the unrolled threefry rounds that draw its weights: 23 CPU-s for a
# tiny ResNet's init on the 2-core development machine, 2.3 s at -O2, with every weight
# bit-identical (tests/test_utils.py checks this).  The program runs once per run, so its
# own speed does not matter.  CPU only: other backends keep their defaults.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


def compile_init(jitted, *args):
    """``jitted`` (a ``jax.jit`` of an initialisation) compiled for ``args``, with
    :data:`INIT_COMPILER_OPTIONS` on the CPU backend."""
    lowered = jitted.lower(*args)
    if jax.default_backend() == "cpu":
        return lowered.compile(compiler_options=INIT_COMPILER_OPTIONS)
    return lowered.compile()


def param_shapes(model, input_size, collection: str = "params"):
    """Shapes of one collection of a model's variables (nothing allocated)."""
    return variable_shapes(model, input_size).get(collection, {})


def param_count(model, input_size) -> int:
    """Number of trainable parameters (the ``params`` collection)."""
    return int(sum(x.size for x in jax.tree.leaves(param_shapes(model, input_size))))


def absl_help_lists(module_flags, names):
    """Make absl's ``--help`` list ``names``: it lists the flags of the module it takes
    ``sys.argv[0]`` for, which under an installed console script (``jaxvision-train``) is the
    script, not the module that defined them."""
    import sys
    for name in names:
        module_flags.register_key_flag_for_module(sys.argv[0], module_flags[name])


class MissingExtra(ImportError):
    """An optional package, installed with one of jaxvision's extras, is missing."""


def require(module: str, extra: str, purpose: str):
    """``import module``, or ``MissingExtra`` saying which extra of jaxvision installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{purpose} needs the {module.split('.')[0]} package, which is not "
                           f"installed: pip install 'jaxvision[{extra}]'") from e
