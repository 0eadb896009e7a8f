"""jaxvision.utils: the initialisation compiled at -O2 draws the weights the default
compilation draws, bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.utils import INIT_COMPILER_OPTIONS, compile_init


@pytest.mark.parametrize("name", ["mnist_cnn"])
def test_compile_init_draws_the_same_weights(name):
    assert jax.default_backend() == "cpu"
    model = jaxvision.create_model(name)
    x = jnp.zeros((1, *jaxvision.model_cfg(name)["input_size"]))
    init = jax.jit(lambda k: model.init({"params": k, "dropout": k}, x, train=False))
    key = jax.random.PRNGKey(7)
    fast = compile_init(init, key)
    assert INIT_COMPILER_OPTIONS["xla_backend_optimization_level"] < 3
    got, want = fast(key), init.lower(key).compile()(key)  # the latter at XLA's default
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
