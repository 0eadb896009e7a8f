"""Kernel choices as configuration (jaxvision/kernels.py) and digit test-time shifts."""
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import kernels
from jaxvision.data.crops import shift_tta
from jaxvision.evaluate import views
from jaxvision.layers import Conv, pad
from jaxvision.layers.attention_vit import requested_attention_impl
from jaxvision.layers.conv_impl import requested_impl


def _primitives(conv: str) -> set[str]:
    """Primitive names of a 3x3 conv's forward and gradient, traced under ``conv``."""
    layer = Conv(8, (3, 3), padding=pad(1))
    x = jnp.ones((2, 8, 8, 4))
    params = layer.init(jax.random.PRNGKey(0), x)

    def loss(p, x):
        return jnp.sum(layer.apply(p, x) ** 2)

    with kernels.use(conv=conv):
        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x)
    names = set()

    def walk(j):
        for eqn in j.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jaxpr.jaxpr)
    return names


def test_use_sets_the_plan_a_model_is_traced_with(monkeypatch):
    monkeypatch.delenv(kernels.CONV_ENV_VAR, raising=False)
    assert requested_impl() == "auto"
    with kernels.use(conv="matmul"):
        assert requested_impl() == "matmul"
        with kernels.use(attention="xla"):
            assert requested_impl() == "matmul" and requested_attention_impl() == "xla"
    assert requested_impl() == "auto"
    # the plan changes what is compiled: lax keeps XLA's convolution, matmul has none
    assert "conv_general_dilated" in _primitives("lax")
    assert "conv_general_dilated" not in _primitives("matmul")


def test_environment_is_only_the_default(monkeypatch):
    monkeypatch.setenv(kernels.CONV_ENV_VAR, "lax")
    monkeypatch.setenv(kernels.ATTENTION_ENV_VAR, "xla")
    assert kernels.conv() == "lax" and kernels.attention() == "xla"
    with kernels.use(conv="matmul"):
        assert kernels.conv() == "matmul"
    monkeypatch.setenv(kernels.CONV_ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="JAXVISION_CONV_IMPL='fastest' is not one of"):
        kernels.conv()


def test_bad_kernel_names_are_refused():
    with pytest.raises(ValueError, match="kernels.conv='winograd' is not one of auto"):
        with kernels.use(conv="winograd"):
            pass
    with pytest.raises(ValueError, match="kernels.attention='flash' is not one of"):
        kernels.check("attention", "flash")
    assert kernels.check("conv", " OneDNN ") == "onednn"


def test_in_effect_resolves_a_config(monkeypatch):
    from jaxvision.config import default_config
    monkeypatch.delenv(kernels.CONV_ENV_VAR, raising=False)
    c = default_config()
    c.kernels.conv = "lax"
    got = kernels.in_effect(c)
    assert got["conv"] == "lax" and got["attention"] == "auto"
    assert got["cpu_conv_library"] in ("onednn", "ynnpack")
    assert kernels.conv() == "auto"  # nothing left behind


def test_shift_views_are_the_image_moved_by_one_pixel():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 6, 7, 1), np.float32))
    v = np.asarray(shift_tta(x, 1))
    assert v.shape == (5, 2, 6, 7, 1)
    np.testing.assert_array_equal(v[0], x)
    xn = np.asarray(x)
    # content moves down (row r of the view is row r-1 of the image), edge row repeated
    np.testing.assert_array_equal(v[1][:, 1:], xn[:, :-1])
    np.testing.assert_array_equal(v[1][:, 0], xn[:, 0])
    np.testing.assert_array_equal(v[2][:, :-1], xn[:, 1:])  # up
    np.testing.assert_array_equal(v[3][:, :, 1:], xn[:, :, :-1])  # right
    np.testing.assert_array_equal(v[4][:, :, :-1], xn[:, :, 1:])  # left
    np.testing.assert_array_equal(np.asarray(views(x, "shift")), v)
    with pytest.raises(ValueError, match="positive whole number of pixels"):
        shift_tta(x, 0)


def test_conv_precision_is_configuration_refused_where_it_would_do_nothing(monkeypatch):
    from jaxvision.config import default_config, validate
    monkeypatch.delenv(kernels.CONV_ENV_VAR, raising=False)
    monkeypatch.delenv(kernels.PRECISION_ENV_VAR, raising=False)
    assert kernels.conv_precision() == "float32"
    with kernels.use(conv_precision="BFloat16"):
        assert kernels.conv_precision() == "bfloat16"
    monkeypatch.setenv(kernels.PRECISION_ENV_VAR, "bfloat16")
    assert kernels.conv_precision() == "bfloat16"  # the environment is the default
    monkeypatch.delenv(kernels.PRECISION_ENV_VAR)
    with pytest.raises(ValueError, match="kernels.conv_precision='fp8' is not one of"):
        kernels.check("conv_precision", "fp8")
    c = default_config()
    c.kernels.conv_precision = "bfloat16"
    with pytest.raises(ValueError, match="needs kernels.conv=onednn, not 'auto'"):
        validate(c)
    c.kernels.conv = "lax"
    with pytest.raises(ValueError, match="needs kernels.conv=onednn, not 'lax'"):
        validate(c)
    c.kernels.conv = "onednn"
    validate(c)
    got = kernels.in_effect(c)
    assert got["conv"] == "onednn" and got["conv_precision"] == "bfloat16"
    assert kernels.in_effect(default_config())["conv_precision"] == "float32"
