"""Every formulation of ``conv_general_dilated`` equals ``lax.conv_general_dilated`` in value
and in both gradients, over strides, paddings, kernel sizes, groups, dilations and dtypes."""
import functools
import os
import platform

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxvision.backends.cpu import platform as cpu_platform
from jaxvision.layers import Conv, conv_impl, onednn, pad
from jaxvision.layers import conv as conv_layer
from jaxvision.layers.conv_impl import Plan, conv_general_dilated
from tests.helpers import load_experiment

NHWC = ("NHWC", "HWIO", "NHWC")
FORMS = ("im2col", "shift", "winograd2", "winograd4")
# Each formulation in all three passes (the grids below; a Winograd pass on a conv it cannot
# compute runs lax's), and mixed plans where one pass is lax's and the others are not
# (test_mixed_plans).
# oneDNN's primitives too where the library is installed (CI installs it and checks that it
# loads): reported as skipped in the parametrized tests where it is not, and left out of the
# loops over PLANS.
ONEDNN_PLAN = Plan("onednn", "onednn", "onednn")
PLANS = [Plan(f, f, f) for f in FORMS] + ([ONEDNN_PLAN] if onednn.available() else [])
PLAN_PARAMS = [Plan(f, f, f) for f in FORMS] + [pytest.param(
    ONEDNN_PLAN, id=str(ONEDNN_PLAN), marks=pytest.mark.skipif(
        not onednn.available(), reason=f"oneDNN unavailable: {onednn.unavailable_reason()}"))]
MIXED = [Plan("lax", "im2col", "shift"), Plan("shift", "lax", "im2col"),
         Plan("im2col", "shift", "lax"), Plan("winograd4", "lax", "winograd2"),
         Plan("lax", "winograd4", "im2col")]
# F(4x4, 3x3)'s transforms multiply by up to 8 and divide by 24 (Lavin & Gray, 2016): its
# float32 rounding error is about ten times that of a direct convolution.
F32_TOL = {"winograd4": 5e-5}


def _value_and_grads(conv, x, w, ct):
    """(y, dL/dx, dL/dw) for L = <conv(x, w), ct>, jitted."""
    def f(x, w):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(ct))
    return jax.jit(f)(x, w)


def _check(x_shape, k_shape, strides, padding, *, dilation=(1, 1), groups=1, plan,
           dtype=jnp.float32, dn=NHWC, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
    kw = dict(rhs_dilation=dilation, dimension_numbers=dn, feature_group_count=groups)

    def ref(a, b):
        return lax.conv_general_dilated(a, b, strides, padding, precision="highest", **kw)

    def ours(a, b):
        return conv_general_dilated(a, b, strides, padding, precision="highest", impl=plan,
                                    **kw)

    y_ref = jax.eval_shape(ref, x, w)
    ct = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    want = _value_and_grads(ref, x, w, ct)  # float32 reference in every case.
    got = _value_and_grads(ours, x.astype(dtype), w.astype(dtype), ct.astype(dtype))
    tol = max(F32_TOL.get(f, 1e-5) for f in plan) if dtype == jnp.float32 else 2e-2
    for name, g, r in zip(("value", "dx", "dw"), got, want):
        assert g.shape == r.shape and g.dtype == dtype, (name, g.shape, g.dtype)
        scale = float(jnp.max(jnp.abs(r))) + 1e-6
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r), rtol=tol,
                                   atol=tol * scale, err_msg=f"{name} with {plan}")


@pytest.mark.parametrize("plan", PLAN_PARAMS, ids=str)
@pytest.mark.parametrize("k,stride,padding", [
    (1, 1, "VALID"), (1, 2, "SAME"), (1, 3, ((0, 1), (1, 0))),
    (3, 1, ((1, 1), (1, 1))), (3, 2, "SAME"), (3, 3, "VALID"), (3, 2, ((0, 2), (1, 0))),
    (5, 1, "SAME"), (5, 2, ((2, 1), (0, 2))), (5, 3, "SAME"), (7, 2, ((3, 3), (3, 3))),
])
def test_float32_strides_paddings_kernels(plan, k, stride, padding):
    _check((2, 11, 10, 3), (k, k, 3, 4), (stride, stride), padding, plan=plan)


@pytest.mark.parametrize("plan", PLAN_PARAMS, ids=str)
@pytest.mark.parametrize("groups,cin,cout", [(2, 4, 6), (4, 4, 4), (4, 4, 8)],
                         ids=["groups2", "depthwise", "depthwise_x2"])
@pytest.mark.parametrize("stride,dilation,padding", [
    (2, 1, ((1, 0), (0, 1))), (1, 2, "VALID"), (3, 2, "SAME"),
])
def test_float32_groups_dilations(plan, groups, cin, cout, stride, dilation, padding):
    _check((2, 9, 10, cin), (3, 3, cin // groups, cout), (stride, stride), padding,
           dilation=(dilation, dilation), groups=groups, plan=plan)


@pytest.mark.parametrize("form", ["winograd2", "winograd4"])
@pytest.mark.parametrize("x_shape,padding", [
    ((2, 16, 16, 8), ((1, 1), (1, 1))),   # whole tiles
    ((2, 13, 10, 5), ((1, 1), (1, 1))),   # ragged last tiles, odd channels
    ((1, 9, 14, 6), "VALID"),
    ((2, 7, 11, 4), ((0, 2), (2, 0))),    # one-sided paddings of up to 2
    ((1, 6, 5, 3), ((2, 2), (2, 1))),
    ((3, 3, 3, 7), "SAME"),               # a map smaller than one tile
])
def test_winograd(form, x_shape, padding):
    """Winograd F(2x2, 3x3) and F(4x4, 3x3) in all three passes (value, input and kernel
    gradients each checked), and, for ragged tiles and one-sided paddings, each pass alone
    beside lax's."""
    k_shape = (3, 3, x_shape[-1], 6)
    _check(x_shape, k_shape, (1, 1), padding, plan=Plan(form, form, form))
    if x_shape == (2, 13, 10, 5) or padding == ((0, 2), (2, 0)):
        for seed, plan in enumerate([Plan(form, "lax", "lax"), Plan("lax", form, "lax"),
                                     Plan("lax", "lax", form)], start=1):
            _check(x_shape, k_shape, (1, 1), padding, plan=plan, seed=seed)


def test_winograd_applies_only_where_it_computes_the_conv():
    geo = functools.partial(conv_impl.Geometry, 2, 8, 8, 4, 3, 3, 4, 8, 8, (1, 1),
                            ((1, 1), (1, 1)))
    assert conv_impl.winograd_applies(geo((1, 1), 1))
    assert not conv_impl.winograd_applies(geo((2, 2), 1))           # dilated
    assert not conv_impl.winograd_applies(geo((1, 1), 2))           # grouped
    assert not conv_impl.winograd_applies(_geometry(8, 4, 4, 3, 2))  # strided
    assert not conv_impl.winograd_applies(_geometry(8, 4, 4, 5, 1))  # 5x5
    assert not conv_impl.winograd_applies(
        conv_impl.Geometry(2, 8, 8, 4, 3, 3, 4, 9, 6, (1, 1), ((3, 0), (-1, 0)), (1, 1), 1))


def test_winograd_runs_only_in_float32_and_above():
    """A Winograd plan computes float32 by GEMMs, but bfloat16 (whose transforms would lose
    too much) and a strided conv by lax's convolution."""
    def prims(x, w, strides=(1, 1)):
        f = functools.partial(conv_general_dilated, window_strides=strides, padding="SAME",
                              dimension_numbers=NHWC, impl=Plan(*["winograd4"] * 3))
        jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: f(a, b).sum(), argnums=(0, 1)))(x, w)
        return str(jaxpr)
    x = jnp.ones((1, 8, 8, 4))
    w = jnp.ones((3, 3, 4, 4))
    f32 = prims(x, w)
    assert "dot_general" in f32 and "conv_general_dilated" not in f32
    for text in (prims(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)), prims(x, w, (2, 2))):
        assert "conv_general_dilated" in text and "dot_general" not in text


@pytest.mark.parametrize("plan", MIXED, ids=str)
def test_mixed_plans(plan):
    _check((2, 7, 8, 4), (3, 3, 4, 6), (2, 2), ((1, 0), (1, 1)), plan=plan)
    _check((2, 7, 8, 4), (3, 3, 2, 6), (1, 1), "SAME", groups=2, dilation=(2, 1), plan=plan)


@pytest.mark.parametrize("plan", PLAN_PARAMS + MIXED[:1], ids=str)
def test_forward_mode_and_input_only_gradients(plan):
    """jax.jvp works (the derivative rule is a custom_jvp), and a gradient w.r.t. the kernel
    alone (the input is data, as for a network's first conv) is right."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 6, 7, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 5)), jnp.float32)
    dx = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    dw = jnp.asarray(rng.standard_normal(w.shape), jnp.float32)
    kw = dict(dimension_numbers=NHWC, precision="highest")
    ours = lambda a, b: conv_general_dilated(a, b, (2, 1), "SAME", impl=plan, **kw)  # noqa: E731
    ref = lambda a, b: lax.conv_general_dilated(a, b, (2, 1), "SAME", **kw)  # noqa: E731
    chex.assert_trees_all_close(jax.jvp(ours, (x, w), (dx, dw)),
                                jax.jvp(ref, (x, w), (dx, dw)), rtol=1e-5, atol=1e-4)
    chex.assert_trees_all_close(jax.grad(lambda b: jnp.sum(ours(x, b) ** 2))(w),
                                jax.grad(lambda b: jnp.sum(ref(x, b) ** 2))(w),
                                rtol=1e-5, atol=1e-4)


def test_rectangular_and_anisotropic():
    for plan in PLANS:
        _check((1, 12, 7, 5), (3, 2, 5, 3), (2, 1), ((1, 2), (0, 1)), dilation=(1, 2),
               plan=plan)
        # Negative padding crops, as in lax.
        _check((1, 12, 9, 2), (3, 3, 2, 3), (1, 2), ((-1, 2), (1, -2)), plan=plan)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("plan", PLAN_PARAMS, ids=str)
def test_low_precision(plan, dtype):
    _check((2, 8, 8, 8), (3, 3, 8, 8), (1, 1), pad(1), plan=plan, dtype=dtype)
    _check((2, 8, 8, 8), (3, 3, 4, 6), (2, 2), "SAME", groups=2, plan=plan, dtype=dtype)


@pytest.mark.parametrize("dn", [("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW"),
                                ("NCHW", "HWIO", "NHWC")])
def test_other_dimension_numbers(dn):
    x_shape = (2, 3, 9, 8) if dn[0] == "NCHW" else (2, 9, 8, 3)
    k_shape = (5, 3, 3, 3) if dn[1] == "OIHW" else (3, 3, 3, 5)
    for plan in PLANS:
        _check(x_shape, k_shape, (2, 1), ((1, 1), (0, 2)), plan=plan, dn=dn)


def test_flax_dimension_numbers_object():
    """Flax passes a ``ConvDimensionNumbers`` rather than strings."""
    dn = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    _check((2, 7, 7, 4), (3, 3, 4, 6), (1, 1), "SAME", plan=PLANS[0], dn=dn)


def test_one_dimensional():
    for plan in PLANS:
        _check((2, 13, 3), (5, 3, 4), (2,), ((2, 1),), dilation=(2,), plan=plan,
               dn=("NWC", "WIO", "NWC"))


def test_preferred_element_type():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 6, 6, 4)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.bfloat16)
    kw = dict(dimension_numbers=NHWC, preferred_element_type=jnp.float32)
    want = lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw)
    for plan in PLANS:
        f = functools.partial(conv_general_dilated, window_strides=(1, 1), padding="SAME",
                              impl=plan, **kw)
        got = f(x, w)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
        dx, dw = jax.grad(lambda a, b, f=f: f(a, b).sum(), argnums=(0, 1))(x, w)
        assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
        assert np.isfinite(np.asarray(dx, np.float32)).all()


class TestVariants(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_env_impls_agree(self):
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.standard_normal((2, 4, 4, 64)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, 64, 16)), jnp.float32)
        want = lax.conv_general_dilated(x, w, (1, 1), pad(1), dimension_numbers=NHWC,
                                        precision="highest")
        for impl in conv_impl.IMPLS:
            f = self.variant(lambda a, b, impl=impl: conv_general_dilated(
                a, b, (1, 1), pad(1), dimension_numbers=NHWC, precision="highest",
                impl=impl))
            chex.assert_trees_all_close(f(x, w), want, rtol=1e-5, atol=1e-4)


def test_env_var_read_at_trace_time(monkeypatch):
    x = jnp.ones((1, 2, 2, 64))
    w = jnp.ones((3, 3, 64, 8))

    def jaxpr_text():  # through the public entry point, which has lax's signature.
        return str(jax.make_jaxpr(lambda a, b: conv_layer.conv_general_dilated(
            a, b, (1, 1), pad(1), dimension_numbers=NHWC))(x, w))

    monkeypatch.setenv(conv_impl.ENV_VAR, "lax")
    assert "conv_general_dilated" in jaxpr_text() and "custom_vjp" not in jaxpr_text()
    monkeypatch.setenv(conv_impl.ENV_VAR, "matmul")
    assert "conv_general_dilated" not in jaxpr_text()
    assert "dot_general" in jaxpr_text()
    monkeypatch.setenv(conv_impl.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="JAXVISION_CONV_IMPL"):
        jaxpr_text()


def test_bad_impl_and_plan_rejected():
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(ValueError, match="impl"):
        conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, impl="fast")
    with pytest.raises(ValueError, match="Plan"):
        conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                             impl=Plan("lax", "gemm", "lax"))


def test_unsupported_calls_fall_back_to_lax():
    """lhs_dilation, batch_group_count and 3-D convs are computed by lax, correctly."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32)
    for kw in (dict(lhs_dilation=(2, 2)), dict(batch_group_count=2)):
        want = lax.conv_general_dilated(x, w, (1, 1), pad(1), dimension_numbers=NHWC, **kw)
        got = conv_general_dilated(x, w, (1, 1), pad(1), dimension_numbers=NHWC,
                                   impl="matmul", **kw)
        np.testing.assert_array_equal(got, want)
    x3 = jnp.asarray(rng.standard_normal((1, 4, 4, 4, 2)), jnp.float32)
    w3 = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 2)), jnp.float32)
    dn3 = ("NDHWC", "DHWIO", "NDHWC")
    np.testing.assert_array_equal(
        conv_general_dilated(x3, w3, (1, 1, 1), "SAME", dimension_numbers=dn3,
                             impl="matmul"),
        lax.conv_general_dilated(x3, w3, (1, 1, 1), "SAME", dimension_numbers=dn3))


def _geometry(h, c, o, k, s):
    p = (k - 1) // 2
    ho = (h + 2 * p - k) // s + 1
    return conv_impl.Geometry(32, h, h, c, k, k, o, ho, ho, (s, s), ((p, p), (p, p)),
                               (1, 1), 1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("k,stride,padding,mult", [
    (7, 1, "SAME", 1), (3, 2, ((0, 2), (1, 0)), 2), (5, 1, ((-1, 3), (2, 2)), 3)])
def test_depthwise_tapwise_form(dtype, k, stride, padding, mult):
    """Depthwise convs (one input channel per group, any channel multiplier) under the
    "shift" plan: broadcast multiplies per tap, the kernel gradient summed image by image."""
    _check((3, 9, 8, 5), (k, k, 1, 5 * mult), (stride, stride), padding, groups=5,
           plan=Plan("shift", "shift", "shift"), dtype=dtype)


def test_depthwise_forward_mode_and_second_order():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 8)), jnp.float32)
    kw = dict(dimension_numbers=NHWC, feature_group_count=4, precision="highest")
    ours = lambda a, b: conv_general_dilated(  # noqa: E731
        a, b, (1, 2), "SAME", impl=Plan("shift", "shift", "shift"), **kw)
    ref = lambda a, b: lax.conv_general_dilated(a, b, (1, 2), "SAME", **kw)  # noqa: E731
    tangents = (x[::-1], w * 0.5)
    chex.assert_trees_all_close(jax.jvp(ours, (x, w), tangents),
                                jax.jvp(ref, (x, w), tangents), rtol=1e-5, atol=1e-4)

    def grad_of_grad(conv):  # d/dw of |d/dx sum(conv^2)|^2: transposes the scan twice.
        return jax.grad(lambda b: jnp.sum(jax.grad(
            lambda a: jnp.sum(conv(a, b) ** 2))(x) ** 2))(w)
    chex.assert_trees_all_close(grad_of_grad(ours), grad_of_grad(ref), rtol=1e-4, atol=1e-3)


def test_depthwise_kernel_gradient_keeps_no_per_tap_copies():
    """The image-by-image kernel gradient saves the input, not its KH*KW shifted views: the
    compiled gradient's temporary memory stays a few input sizes for a 7x7 kernel (the
    per-tap copies would take 49)."""
    x = jnp.ones((8, 24, 24, 16), jnp.float32)
    w = jnp.ones((7, 7, 1, 16), jnp.float32)

    def loss(a, b):
        y = conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=NHWC,
                                 feature_group_count=16, impl=Plan("shift", "shift", "shift"))
        return jnp.sum(jnp.tanh(y))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
    mem = compiled.memory_analysis()
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    assert mem.temp_size_in_bytes < 8 * x.nbytes, (mem.temp_size_in_bytes, x.nbytes)
    text = str(jax.make_jaxpr(jax.grad(loss, argnums=1))(x, w))
    assert "scan" in text and "conv_general_dilated" not in text


def test_plan_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # XLA's default convolution library (YNNPACK)
    lax_only = Plan("lax", "lax", "lax")
    tiny = _geometry(2, 512, 512, 3, 1)      # 2x2x512: the native kernel's cliff.
    strided = _geometry(4, 256, 512, 3, 2)   # input-gradient cliff of a strided conv.
    big = _geometry(56, 64, 64, 3, 1)
    wide = _geometry(14, 256, 256, 3, 1)
    small_map = _geometry(7, 512, 512, 3, 1)
    shortcut = _geometry(56, 64, 128, 1, 2)
    stem = _geometry(224, 3, 64, 7, 2)
    assert conv_impl.conv_plan(tiny, "auto", "cpu").fwd == "im2col"
    assert conv_impl.conv_plan(tiny, "auto", "cpu").dgrad == "im2col"
    assert conv_impl.conv_plan(strided, "auto", "cpu").dgrad == "im2col"
    assert conv_impl.conv_plan(big, "auto", "cpu") == Plan("winograd4", "winograd4", "winograd4")
    assert conv_impl.conv_plan(wide, "auto", "cpu") == Plan("lax", "lax", "winograd4")
    assert conv_impl.conv_plan(small_map, "auto", "cpu") == lax_only
    # The stem's kernel gradient is im2col's on Intel CPUs only (measured per vendor).
    for vendor, wgrad in [("intel", "im2col"), ("amd", "lax"), ("other", "lax")]:
        monkeypatch.setattr(conv_impl, "cpu_vendor", lambda v=vendor: v)
        assert conv_impl.conv_plan(stem, "auto", "cpu") == Plan("lax", "lax", wgrad), vendor
        assert conv_impl.conv_plan(_geometry(64, 3, 64, 7, 2), "auto", "cpu").wgrad == wgrad
        assert conv_impl.conv_plan(_geometry(224, 16, 64, 7, 2), "auto", "cpu") == lax_only
        assert conv_impl.conv_plan(stem, "auto", "gpu") == lax_only
    assert conv_impl.conv_plan(shortcut, "auto", "cpu").wgrad != "lax"
    assert conv_impl.conv_plan(_geometry(56, 64, 128, 3, 2), "auto", "cpu").wgrad == "shift"
    assert conv_impl.conv_plan(_geometry(16, 64, 128, 3, 2), "auto", "cpu").wgrad == "lax"
    for platform in ("gpu", "tpu"):
        assert conv_impl.conv_plan(tiny, "auto", platform) == lax_only
        assert conv_impl.conv_plan(big, "auto", platform) == lax_only
    assert conv_impl.conv_plan(tiny, "lax", "cpu") == lax_only
    # Depthwise convs (ConvNeXt's 7x7) run tap by tap on the CPU; other grouped convs keep
    # the native kernel.
    dw = _geometry(56, 96, 96, 7, 1)._replace(groups=96)
    for library in ("ynnpack", "onednn"):
        assert conv_impl.choose_plan_cpu(dw, library) == Plan("shift", "shift", "shift")
        assert conv_impl.choose_plan_cpu(dw._replace(o=192), library).wgrad == "shift"
        assert conv_impl.choose_plan_cpu(dw._replace(groups=48), library) == lax_only
    assert conv_impl.conv_plan(dw, "auto", "gpu") == lax_only
    assert conv_impl.conv_plan(big, "matmul", "gpu") == Plan("im2col", "im2col", "im2col")

    # Strided convs whose output map is narrower than the kernel (CapsNet's 9x9/2 primary
    # capsules, 20x20 -> 6x6): per-tap products forward (with many channels), im2col for
    # the input gradient; the same kernel with padding (10x10 outputs) keeps lax.
    caps = conv_impl.Geometry(32, 20, 20, 256, 9, 9, 256, 6, 6, (2, 2), ((0, 0), (0, 0)),
                               (1, 1), 1)
    assert conv_impl.conv_plan(caps, "auto", "cpu") == Plan("shift", "im2col", "lax")
    assert conv_impl.conv_plan(caps._replace(c=64), "auto", "cpu") == Plan("lax", "im2col", "lax")
    padded = caps._replace(pads=((4, 4), (4, 4)), ho=10, wo=10)
    assert conv_impl.conv_plan(padded, "auto", "cpu") == lax_only


def test_loop_body_moves_gradients_off_the_native_kernel(monkeypatch):
    """Inside ``loop_body()`` the CPU plan computes both gradients without lax's kernel
    (slow inside XLA:CPU loops) and keeps everything else; other backends are unaffected."""
    monkeypatch.delenv(conv_impl.ENV_VAR, raising=False)
    odefunc = _geometry(6, 64, 64, 3, 1)
    big = _geometry(56, 64, 64, 3, 1)
    assert conv_impl.conv_plan(odefunc, "auto", "cpu") == Plan("lax", "lax", "lax")
    assert conv_impl.conv_plan(odefunc, "auto", "cpu", in_loop=True) == Plan("lax", "shift",
                                                                              "shift")
    assert conv_impl.conv_plan(big, "auto", "cpu", in_loop=True) == Plan(
        "winograd4", "winograd4", "winograd4")
    grouped = odefunc._replace(groups=2)
    assert conv_impl.conv_plan(grouped, "auto", "cpu", in_loop=True) == Plan("lax", "lax", "lax")
    assert conv_impl.conv_plan(odefunc, "auto", "gpu", in_loop=True) == Plan("lax", "lax", "lax")

    # The flag reaches conv_general_dilated through the context, only while it is open, and
    # a scan's gradient under it equals lax's.
    seen = []
    real = conv_impl.conv_plan

    def spy(*args, **kwargs):
        plan = real(*args, **kwargs)
        seen.append(plan)
        return plan

    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 8))
    w = jax.random.normal(jax.random.key(1), (3, 3, 8, 8)) * 0.1
    dn = ("NHWC", "HWIO", "NHWC")

    def run(conv, x0, w0):
        def body(c, _):
            return c + 0.1 * jnp.tanh(conv(c, w0, (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=dn,
                                           precision=lax.Precision.HIGHEST)), None
        return jnp.sum(jax.lax.scan(body, x0, jnp.arange(3))[0] ** 2)

    def looped(c, w_, *a, **k):
        with conv_impl.loop_body():
            return conv_impl.conv_general_dilated(c, w_, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_impl, "conv_plan", spy)
        g_ours = jax.grad(lambda *a: run(looped, *a), argnums=(0, 1))(x, w)
        assert seen and all(p.wgrad == "shift" and p.dgrad == "shift" for p in seen)
        seen.clear()
        jax.grad(lambda *a: run(conv_impl.conv_general_dilated, *a), argnums=(0, 1))(x, w)
        assert seen and all(p == Plan("lax", "lax", "lax") for p in seen)
    g_ref = jax.grad(lambda *a: run(lax.conv_general_dilated, *a), argnums=(0, 1))(x, w)
    for ours, ref in zip(g_ours, g_ref):
        assert float(jnp.abs(ref).max()) > 0.1
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["lax", "matmul"])
def test_flax_conv_equals_nn_conv(monkeypatch, impl):
    """``Conv`` has ``nn.Conv``'s variables and, through any implementation, its outputs and
    gradients (stride 2, explicit padding, bias, groups)."""
    monkeypatch.setenv(conv_impl.ENV_VAR, impl)
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
    for kw in (dict(strides=(2, 2), padding=pad(1)), dict(padding="SAME", feature_group_count=2),
               dict(padding="VALID", kernel_dilation=(2, 2))):
        ours = Conv(6, (3, 3), **kw)
        ref = nn.Conv(6, (3, 3), kernel_init=ours.kernel_init, precision="highest", **kw)
        variables = ref.init(jax.random.key(1), x)
        chex.assert_trees_all_equal_shapes(ours.init(jax.random.key(1), x), variables)
        ours = ours.clone(precision="highest")

        def loss(module, v, x):
            return jnp.sum(jnp.sin(module.apply(v, x)))

        got = jax.value_and_grad(functools.partial(loss, ours), argnums=(0, 1))(variables, x)
        want = jax.value_and_grad(functools.partial(loss, ref), argnums=(0, 1))(variables, x)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_conv_passes_script(capsys):
    """experiments/conv_passes.py times every pass, with explicit padding, forms in turn
    (--interleave), and the loop mode."""
    mod = load_experiment("conv_passes")
    mod.main(["--shapes", "2x10x4x4", "--kernel", "5", "--stride", "2", "--padding", "0",
              "--forms", "lax,im2col", "--repeats", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("2x10x4x4: lax ") and out[1].count("/") == 4
    mod.main(["--shapes", "2x6x4x4", "--loop", "2", "--forms", "lax,auto", "--repeats", "1"])
    out = capsys.readouterr().out.splitlines()
    assert "lax.scan / unrolled" in out[0] and out[1].count("/") == 2
    mod.main(["--shapes", "2x6x4x8", "--kernel", "3", "--groups", "depthwise",
              "--forms", "lax,shift", "--repeats", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("2x6x4x8: lax ") and "| shift " in out[1]
    mod.main(["--shapes", "2x6x4x4", "--forms", "lax,winograd2", "--repeats", "2",
              "--interleave"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("2x6x4x4: lax ") and "| winograd2 " in out[1]
    assert out[1].count("/") == 4
    with pytest.raises(SystemExit):
        mod.main(["--shapes", "2x6x4x4", "--forms", "auto"])  # auto only with --loop
    with pytest.raises(SystemExit):
        mod.main(["--shapes", "2x6x4x4", "--loop", "2", "--interleave"])
    for bad in (["--groups", "4"], ["--groups", "0"], ["--groups", "two"],
                ["--groups", "depthwise", "--loop", "2"]):
        with pytest.raises(SystemExit):
            mod.main(["--shapes", "2x6x4x6", "--forms", "lax", *bad])


def test_plan_ab_script(capsys, monkeypatch):
    """experiments/plan_ab.py traces each variant with its thresholds in place (here: one
    that makes test_cnn's forward convs single GEMMs), restores them, times all in turn, and
    refuses an unknown or non-numeric threshold before compiling anything."""
    mod = load_experiment("plan_ab")
    table = dict(conv_impl.THRESHOLDS)
    seen = []
    choose = conv_impl.choose_plan_cpu
    monkeypatch.setattr(conv_impl, "choose_plan_cpu",
                        lambda g, lib="ynnpack": seen.append(choose(g, lib)) or seen[-1])
    gemm = "min_channels=1,fwd_max_out_positions=1e6"  # every forward pass one GEMM
    rows = mod.main(["--model", "test_cnn", "--resolution", "8", "--batch", "2",
                     "--rounds", "2", "--variant", "", "--variant", gemm])
    assert conv_impl.THRESHOLDS == table
    assert [r["variant"] for r in rows] == ["", gemm] and rows[0]["ratio"] == 1.0
    assert all(r["min_ms"] <= r["median_ms"] for r in rows)
    half = len(seen) // 2
    assert half and not any(p.fwd == "im2col" for p in seen[:half])
    assert all(p.fwd == "im2col" for p in seen[half:])
    out = capsys.readouterr().out
    assert "ms per train step" in out and out.count(" x1.000 ") == 1
    assert mod.parse_variant("impl=xla, winograd_min_side=3") == {"impl": "xla",
                                                                 "winograd_min_side": 3}
    # impl= sets JAXVISION_CONV_IMPL while its variant is traced (lax: no rule consulted).
    monkeypatch.setenv(conv_impl.ENV_VAR, "auto")
    seen.clear()
    mod.main(["--model", "test_cnn", "--resolution", "8", "--batch", "2", "--rounds", "1",
              "--variant", "impl=lax"])
    assert not seen and os.environ[conv_impl.ENV_VAR] == "auto"
    for bad, match in (("winograd_min_sides=3", "did you mean winograd_min_side"),
                       ("winograd_min_side", "not KEY=VALUE"),
                       ("winograd_min_side=big", "not a number"),
                       ("impl=fast", "is not one of")):
        with pytest.raises(ValueError, match=match):
            mod.main(["--resolution", "8", "--variant", bad])
    for bad in (["--rounds", "0"], ["--batch", "0"], ["--resolution", "0"]):
        with pytest.raises(SystemExit):
            mod.main(["--resolution", "8", "--variant", "", *bad])
    assert conv_impl.THRESHOLDS == table


def test_conv_vs_torch_script(capsys):
    """experiments/conv_vs_torch.py times each of ResNet-18's distinct convs per pass under
    jaxvision's plan and PyTorch's conv2d, and sums them over the network."""
    pytest.importorskip("torch")
    mod = load_experiment("conv_vs_torch")
    rows = mod.main(["--resolution", "32", "--batch", "2", "--repeats", "1"])
    assert [r["count"] for r in rows] == [1, 4, 1, 1, 3, 1, 1, 3, 1, 1, 3]
    assert rows[0]["conv"] == "7x7/2 3->64 (32x32)" and rows[-1]["conv"].endswith("(1x1)")
    assert rows[3]["plan"] == ("shift", "shift", "shift")  # a strided 1x1 shortcut
    assert all(len(r["jaxvision_ms"]) == 3 and min(r["jaxvision_ms"]) > 0 for r in rows)
    out = capsys.readouterr().out
    assert "sum (without the stem's input gradient)" in out and out.count(" plan ") == 11
    for bad in (["--resolution", "48"], ["--resolution", "32", "--repeats", "0"],
                ["--resolution", "32", "--batch", "0"]):
        with pytest.raises(SystemExit):
            mod.main(bad)


ONEDNN_ENV = " ".join(conv_impl.ONEDNN_XLA_FLAGS)


def test_plan_choice_with_onednn_convolutions(monkeypatch):
    """With XLA:CPU's convolutions out of YNNPACK (the 'onednn' setting), stride-1 3x3 convs
    of at least 1G multiply-adds and 128 channels run Winograd F(4x4) where its tiles fit
    the map, F(2x2) elsewhere, but for the input gradient of maps under 14x14; those with
    fewer channels run natively; the smaller ones (0.25G-1G) get Winograd's kernel gradient,
    and on maps from 4x4 to 13x13 with 128 channels its forward pass too; the stem keeps the
    native kernel and the cliffs keep their matrix-product forms."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 " + ONEDNN_ENV)
    monkeypatch.setattr(conv_impl, "cpu_vendor", lambda: "intel")
    assert conv_impl.cpu_conv_library() == "onednn"
    lax_only = Plan("lax", "lax", "lax")
    w2, w4 = "winograd2", "winograd4"
    expected = [  # (input side, C, O, kernel, stride), batch, plan
        # ResNet-18's stride-1 3x3 convs at 224x224 ...
        ((56, 64, 64, 3, 1), 32, lax_only),
        ((28, 128, 128, 3, 1), 32, Plan(w4, w4, w4)),
        ((14, 256, 256, 3, 1), 32, Plan(w2, w2, w4)),
        ((7, 512, 512, 3, 1), 32, Plan(w2, "lax", w4)),
        # ... WRN-28-10's at 32x32 ...
        ((8, 640, 640, 3, 1), 32, Plan(w4, "lax", w4)),
        # ... and ResNet-18's at 64x64 (0.3G multiply-adds): the native forward and input
        # gradient on 16x16 maps; on the small maps Winograd forward (F(4x4) on 8x8, F(2x2)
        # on 4x4) and kernel gradient, the native input gradient.
        ((16, 64, 64, 3, 1), 32, Plan("lax", "lax", w4)),
        ((8, 128, 128, 3, 1), 32, Plan(w4, "lax", w4)),
        ((4, 256, 256, 3, 1), 32, Plan(w2, "lax", w2)),
        ((2, 512, 512, 3, 1), 32, Plan("im2col", "im2col", "lax")),
        # A 7x7 map with fewer multiply-adds still gets F(4x4)'s kernel gradient; 64
        # channels get no Winograd forward, fewer no Winograd at all.
        ((7, 256, 256, 3, 1), 16, Plan(w2, "lax", w4)),
        ((8, 64, 64, 3, 1), 128, Plan("lax", "lax", w4)),
        ((8, 32, 32, 3, 1), 512, lax_only),
        ((224, 3, 64, 7, 2), 32, lax_only),
        # Strided 3x3 convs of 0.1G-1G multiply-adds: per-tap GEMMs for both gradients
        # (where the input gradient is not already a cliff's im2col); from 1G, for the
        # kernel's only.
        ((16, 64, 128, 3, 2), 32, Plan("lax", "shift", "shift")),
        ((16, 64, 128, 3, 2), 16, lax_only),
        ((4, 256, 512, 3, 2), 32, Plan("im2col", "im2col", "shift")),
        ((56, 64, 128, 3, 2), 32, Plan("lax", "lax", "shift")),
        ((56, 64, 128, 1, 2), 32, Plan("shift", "shift", "shift")),
    ]
    for shape, batch, plan in expected:
        g = _geometry(*shape)._replace(n=batch)
        assert conv_impl.conv_plan(g, "auto", "cpu") == plan, (shape, batch)
    assert conv_impl.conv_plan(_geometry(56, 64, 64, 3, 1), "auto", "gpu") == lax_only
    # One of the two flags alone is not the oneDNN setting.
    monkeypatch.setenv("XLA_FLAGS", conv_impl.ONEDNN_XLA_FLAGS[0])
    assert conv_impl.cpu_conv_library() == "ynnpack"


def test_configure_cpu_convolutions(monkeypatch):
    configure = cpu_platform.configure_cpu_convolutions
    monkeypatch.delenv(conv_impl.LIBRARY_ENV_VAR, raising=False)
    monkeypatch.setattr(cpu_platform, "backends_started", lambda: False)
    monkeypatch.setattr(cpu_platform, "cpu_vendor", lambda: "intel")
    monkeypatch.setattr(cpu_platform, "jaxlib_version", lambda: (0, 10, 2))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert conv_impl.cpu_conv_library() == "ynnpack"
    # auto: oneDNN on Intel, appended after the user's own flags, once.
    assert configure() == "onednn"
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=2", *conv_impl.ONEDNN_XLA_FLAGS]
    assert conv_impl.cpu_conv_library() == "onednn"
    assert configure() == "onednn" and os.environ["XLA_FLAGS"].split() == flags
    # ... and on AMD; auto elsewhere (another maker, a CPU that is not x86) leaves XLA's
    # default; an explicit choice or the variable overrides it.
    monkeypatch.setattr(cpu_platform, "cpu_vendor", lambda: "amd")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert configure() == "onednn" and os.environ["XLA_FLAGS"].split() == list(
        conv_impl.ONEDNN_XLA_FLAGS)
    monkeypatch.setattr(cpu_platform, "cpu_vendor", lambda: "other")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert configure() == "ynnpack" and os.environ["XLA_FLAGS"] == ""
    assert configure("onednn") == "onednn" and conv_impl.cpu_conv_library() == "onednn"
    monkeypatch.setattr(cpu_platform, "cpu_vendor", lambda: "intel")
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv(conv_impl.LIBRARY_ENV_VAR, "ynnpack")
    assert configure() == "ynnpack" and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setenv(conv_impl.LIBRARY_ENV_VAR, "mkl")
    with pytest.raises(ValueError, match="JAXVISION_XLA_CPU_CONV='mkl'.*onednn"):
        configure()
    monkeypatch.delenv(conv_impl.LIBRARY_ENV_VAR)
    # Flags the user set for either fusion type are theirs.
    mine = "--xla_cpu_experimental_onednn_fusion_type=dot"
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert configure("onednn") == "ynnpack" and os.environ["XLA_FLAGS"] == mine
    # A jaxlib that would abort on the flags keeps XLA's default; asking for oneDNN says why.
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(cpu_platform, "jaxlib_version", lambda: (0, 8, 0))
    assert configure() == "ynnpack" and os.environ["XLA_FLAGS"] == ""
    with pytest.raises(RuntimeError, match=r"needs jaxlib >= 0\.10\.0.*installed jaxlib: 0\.8\.0"):
        configure("onednn")
    assert os.environ["XLA_FLAGS"] == ""
    monkeypatch.setattr(cpu_platform, "jaxlib_version", lambda: (0, 10, 2))
    # Once JAX's backends run, the flags can no longer take effect.
    monkeypatch.setattr(cpu_platform, "backends_started", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(RuntimeError, match="before JAX starts its backends"):
        configure("onednn")
    assert configure() == "ynnpack" and os.environ["XLA_FLAGS"] == ""
    monkeypatch.undo()
    jnp.ones(1).block_until_ready()
    assert cpu_platform.backends_started()


_ONEDNN_SCRIPT = """
import os, sys
os.environ["XLA_FLAGS"] = {flags!r}
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, jax.numpy as jnp, numpy as np
sys.path[:0] = [{tests!r}, os.path.dirname({tests!r})]  # test_conv imports tests.helpers
import test_conv
from jaxvision.layers import conv_impl
assert conv_impl.cpu_conv_library() == "onednn"
np.savez({out!r}, **test_conv._onednn_case_outputs())
hlo = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
              dimension_numbers=test_conv.NHWC)).lower(
    jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print("convolution outside YNNPACK" if "ynn" not in hlo else "convolution in YNNPACK")
"""


def _onednn_case_outputs() -> dict:
    """Values and both gradients of convs under the CPU plan (stride-1 3x3, strided, 1x1,
    the stem, a small-map cliff) and of a small WRN's loss, for fixed random inputs."""
    from jaxvision.registry import create_model
    out = {}
    cases = [((4, 16, 16, 32), (3, 3, 32, 32), 1, "SAME"),
             ((4, 12, 12, 16), (3, 3, 16, 32), 2, "SAME"),
             ((4, 12, 12, 16), (1, 1, 16, 32), 2, "VALID"),
             ((2, 32, 32, 3), (7, 7, 3, 16), 2, ((3, 3), (3, 3))),
             ((4, 2, 2, 64), (3, 3, 64, 64), 1, "SAME")]
    for i, (xs, ks, s, p) in enumerate(cases):
        kx, kw, kc = jax.random.split(jax.random.key(i), 3)
        x, w = jax.random.normal(kx, xs), jax.random.normal(kw, ks)
        conv = functools.partial(conv_general_dilated, window_strides=(s, s), padding=p,
                                 dimension_numbers=NHWC)
        ct = jax.random.normal(kc, jax.eval_shape(conv, x, w).shape)
        out.update({f"{i}_{k}": np.asarray(v) for k, v in
                    zip("yxw", _value_and_grads(conv, x, w, ct))})
    model = create_model("test_wrn", num_classes=10)
    x = jax.random.normal(jax.random.key(9), (4, 32, 32, 3))
    # Jitted, with an 'rbg' key: XLA:CPU took ~19 s of CPU to compile this init with the
    # default threefry keys, ~3 s with rbg (both processes draw the same values either way)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(10, impl="rbg"), x)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"], rngs={"dropout": jax.random.key(11)})
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])
    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    out["wrn_loss"] = np.asarray(value)
    for j, leaf in enumerate(jax.tree.leaves(grads)):
        out[f"wrn_grad_{j}"] = np.asarray(leaf)
    return out


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or (conv_impl.jaxlib_version() or (0,)) < conv_impl.ONEDNN_MIN_JAXLIB,
                    reason="XLA:CPU's oneDNN convolutions: x86-64 and a recent jaxlib only")
def test_onednn_convolutions_match_the_default_library(tmp_path):
    """A process whose XLA:CPU runs convolutions in oneDNN computes the same values and
    gradients (conv passes under the CPU plan, a WRN's loss gradient) as this one."""
    import subprocess
    import sys
    out = tmp_path / "onednn.npz"
    script = _ONEDNN_SCRIPT.format(flags=ONEDNN_ENV, tests=os.path.dirname(__file__),
                                   out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The flags really moved the convolution out of XLA's default library.
    assert "convolution outside YNNPACK" in proc.stdout, proc.stdout
    hlo = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                  dimension_numbers=NHWC)).lower(
        jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
    assert "ynn" in hlo  # ... where this process runs it
    theirs = np.load(out)
    ours = _onednn_case_outputs()
    assert sorted(theirs.files) == sorted(ours)
    for key, value in ours.items():
        scale = max(float(np.abs(value).max()), 1e-6)
        err = float(np.abs(theirs[key] - value).max()) / scale
        assert err < 2e-4, (key, err)
