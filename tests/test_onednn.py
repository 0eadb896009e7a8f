"""oneDNN's convolution primitives as JAX primitives (jaxvision.layers.onednn): values and
derivatives of every order against lax, vmap, the plan choice, and the unavailable case."""
import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxvision import create_model, kernels
from jaxvision.layers import Conv, conv_impl, onednn, pad
from jaxvision.layers.conv_impl import Plan

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN unavailable: {onednn.unavailable_reason()}")
ONEDNN = Plan("onednn", "onednn", "onednn")


def _lax(x, w, strides, pads, dilation=(1, 1)):
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision="highest")


def _rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _close(a, b, tol=2e-5):
    scale = float(jnp.max(jnp.abs(b))) + 1e-6
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * scale)


GEOMETRIES = [  # x shape, kernel shape, strides, pads, dilation
    ((2, 9, 9, 8), (3, 3, 8, 16), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((2, 11, 10, 6), (3, 3, 6, 10), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ((3, 10, 10, 4), (5, 5, 4, 6), (2, 2), ((2, 2), (2, 2)), (1, 1)),
    ((2, 9, 12, 8), (3, 3, 8, 8), (1, 1), ((0, 2), (2, 0)), (2, 2)),
    ((2, 16, 16, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), (1, 1)),
    ((2, 8, 8, 16), (1, 1, 16, 32), (1, 1), ((0, 0), (0, 0)), (1, 1)),
]


@needs_onednn
@pytest.mark.parametrize("x_shape,k_shape,strides,pads,dilation", GEOMETRIES)
def test_primitives_match_lax_to_second_order(x_shape, k_shape, strides, pads, dilation):
    """The three primitives, and their transposes (each is bilinear: reverse mode of one is
    the other two), give lax's values, gradients, forward-mode tangents and second
    derivatives."""
    x, w = _rand(x_shape, 0), _rand(k_shape, 1)
    ref = functools.partial(_lax, strides=strides, pads=pads, dilation=dilation)
    ours = functools.partial(onednn.conv, strides=strides, pads=pads, dilation=dilation)
    y = jax.jit(ours)(x, w)
    _close(y, ref(x, w))
    ct = _rand(y.shape, 2)
    _close(jax.jit(lambda a: onednn.dgrad(a, w, x.shape, strides, pads, dilation))(ct),
           jax.vjp(lambda a: ref(a, w), x)[1](ct)[0])
    _close(jax.jit(lambda a: onednn.wgrad(x, a, w.shape, strides, pads, dilation))(ct),
           jax.vjp(lambda b: ref(x, b), w)[1](ct)[0])

    def grads(f):
        return jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) * ct), argnums=(0, 1)))(x, w)

    for got, want in zip(grads(ours), grads(ref)):
        _close(got, want)
    _close(jax.jit(lambda: jax.jvp(ours, (x, w), (w.sum() * x, 0.5 * w))[1])(),
           jax.jvp(ref, (x, w), (w.sum() * x, 0.5 * w))[1])

    def second(f):  # d/dw of |d/dx <f(x, w), ct>|^2
        return jax.jit(jax.grad(lambda b: jnp.sum(
            jax.grad(lambda a: jnp.sum(f(a, b) * ct))(x) ** 2)))(w)

    _close(second(ours), second(ref), tol=1e-4)
    # vmap over the activations folds into the batch; over the kernel it is lax's, per element.
    views = jnp.stack([x, 2 * x, -x])
    _close(jax.vmap(ours, in_axes=(0, None))(views, w)[1], ref(2 * x, w))
    _close(jax.vmap(ours, in_axes=(None, 0))(x, jnp.stack([w, -w]))[1], ref(x, -w))
    per_view = jax.vmap(jax.grad(lambda a, b: jnp.sum(ours(a, b) ** 2 * ct)), in_axes=(0, None))
    _close(jax.jit(per_view)(views, w)[2],
           jax.vjp(lambda a: ref(a, w), -x)[1](2 * ref(-x, w) * ct)[0], tol=1e-4)


@needs_onednn
def test_vmap_over_views_stays_one_onednn_call():
    """Test-time views (``jax.vmap`` of a model over a stack of batches) run oneDNN's
    primitives on the views folded into the batch, not XLA's convolution."""
    x, w = _rand((5, 2, 9, 9, 8), 0), _rand((3, 3, 8, 16), 1)
    f = jax.vmap(lambda a: onednn.conv(a, w, pads=((1, 1), (1, 1))))
    eqns = jax.make_jaxpr(f)(x).jaxpr.eqns
    assert [e.primitive.name for e in eqns if "conv" in e.primitive.name] == [
        "jaxvision_onednn_conv_fwd"]
    assert next(e for e in eqns if "conv" in e.primitive.name).invars[0].aval.shape == (
        10, 9, 9, 8)
    _close(jax.jit(f)(x)[3], _lax(x[3], w, (1, 1), ((1, 1), (1, 1))))


@needs_onednn
def test_the_primitives_are_foreign_calls_on_the_cpu():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    f = jax.jit(jax.value_and_grad(lambda a, b: conv_impl.conv_general_dilated(
        a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=ONEDNN).sum(),
        argnums=(0, 1)))
    text = f.lower(x, w).as_text()
    for target in ("jaxvision_onednn_conv_fwd", "jaxvision_onednn_conv_dgrad",
                   "jaxvision_onednn_conv_wgrad"):
        assert f"custom_call @{target}" in text, target
    assert "convolution" not in text
    assert onednn.version().count(".") == 2


def _geom(side, c, o, k, stride, pad=None, n=32):
    pad = k // 2 if pad is None else pad
    out = (side + 2 * pad - k) // stride + 1
    return conv_impl.Geometry(n, side, side, c, k, k, o, out, out, (stride, stride),
                               ((pad, pad), (pad, pad)), (1, 1), 1)


def test_plan_choice(monkeypatch):
    """'auto' picks the primitives on a single-device CPU job where oneDNN loads and the conv
    is one they compute, of at least onednn_min_macs; several devices, other platforms,
    smaller or grouped convs, paddings oneDNN refuses and a missing library keep the 'xla'
    rule; 'onednn' insists."""
    monkeypatch.setenv("XLA_FLAGS", " ".join(conv_impl.ONEDNN_XLA_FLAGS))
    big = _geom(56, 64, 64, 3, 1)
    shortcut = _geom(56, 64, 128, 1, 2, pad=0)  # reads no last row: would need pad -1
    grouped = big._replace(groups=2, o=64)
    monkeypatch.setattr(onednn, "available", lambda: True)
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    assert conv_impl.conv_plan(big, "auto", "cpu") == ONEDNN
    assert conv_impl.conv_plan(big, "auto", "cpu", in_loop=True) == ONEDNN
    small = _geom(16, 64, 64, 3, 1)  # 0.3G multiply-adds: XLA's rule is faster in the step
    assert conv_impl.conv_plan(small, "auto", "cpu") == conv_impl.conv_plan(small, "xla", "cpu")
    assert conv_impl.conv_plan(small, "onednn", "cpu") == ONEDNN
    # The rule's Winograd passes stay from 128 channels: all three at 28x28, the forward
    # and kernel gradient at 7x7 (whose input gradient the rule leaves native).
    assert conv_impl.conv_plan(_geom(28, 128, 128, 3, 1), "auto", "cpu") == Plan(
        "winograd4", "winograd4", "winograd4")
    assert conv_impl.conv_plan(_geom(7, 512, 512, 3, 1), "auto", "cpu") == Plan(
        "winograd2", "onednn", "winograd4")
    assert conv_impl.conv_plan(_geom(28, 128, 128, 3, 1), "onednn", "cpu") == ONEDNN
    assert conv_impl.conv_plan(big, "onednn", "cpu") == ONEDNN
    xla = conv_impl.conv_plan(big, "xla", "cpu")
    assert "onednn" not in xla
    assert conv_impl.conv_plan(big, "auto", "cpu", onednn_dtype=False) == xla
    assert conv_impl.conv_plan(big, "auto", "gpu") == Plan("lax", "lax", "lax")
    assert not conv_impl.onednn_applies(shortcut)
    assert "onednn" not in conv_impl.conv_plan(shortcut, "auto", "cpu")
    assert not conv_impl.onednn_applies(grouped)
    assert "onednn" not in conv_impl.conv_plan(grouped, "onednn", "cpu")
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    assert conv_impl.conv_plan(big, "auto", "cpu") == xla
    assert conv_impl.conv_plan(big, "onednn", "cpu") == ONEDNN
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    monkeypatch.setattr(onednn, "available", lambda: False)
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "no libdnnl here")
    assert conv_impl.conv_plan(big, "auto", "cpu") == xla
    with pytest.raises(RuntimeError, match="JAXVISION_CONV_IMPL=onednn.*no libdnnl here"):
        conv_impl.conv_plan(big, "onednn", "cpu")


def test_onednn_pads_drop_what_no_output_reads():
    g = _geom(10, 4, 4, 3, 2, pad=1)  # (10 + 2 - 3) // 2 + 1 = 5 outputs read rows -1..9
    assert conv_impl._onednn_pads(g) == ((1, 0), (1, 0))
    assert conv_impl._onednn_pads(_geom(9, 4, 4, 3, 2, pad=1)) == ((1, 1), (1, 1))
    assert conv_impl._onednn_pads(_geom(56, 4, 4, 1, 2, pad=0)) == ((0, -1), (0, -1))


@needs_onednn
def test_onednn_plan_falls_back_where_it_cannot_compute():
    """bfloat16, grouped convs and negative padding run lax's convolution under a oneDNN
    plan, with the same result."""
    def text(x, w, **kw):
        f = functools.partial(conv_impl.conv_general_dilated, window_strides=(1, 1),
                              dimension_numbers=("NHWC", "HWIO", "NHWC"), impl=ONEDNN, **kw)
        return jax.jit(jax.grad(lambda a, b: f(a, b).sum(), argnums=(0, 1))).lower(
            x, w).as_text()
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    assert "onednn" in text(x, w, padding="SAME")
    for t in (text(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), padding="SAME"),
              text(x, jnp.ones((3, 3, 2, 4)), padding="SAME", feature_group_count=2),
              text(x, w, padding=((-1, 1), (1, 1)))):
        assert "onednn" not in t and "convolution" in t


@needs_onednn
def test_resnet_train_gradients_match_lax(monkeypatch):
    """A whole network (test_resnet, batch norm in train mode) under oneDNN's convolutions:
    the same logits and parameter gradients as with XLA's own."""
    model = create_model("test_resnet", num_classes=5)
    x = _rand((4, 32, 32, 3), 3)
    # jitted, with an 'rbg' key: an eager init compiles one small program per parameter, and
    # XLA:CPU compiles a threefry init of a small network for many seconds
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0, impl="rbg"), x)
    labels = jnp.arange(4) % 5

    def loss(params, impl):
        monkeypatch.setenv(conv_impl.ENV_VAR, impl)
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(1)})
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits

    outs = {impl: jax.jit(jax.value_and_grad(functools.partial(loss, impl=impl),
                                             has_aux=True))(variables["params"])
            for impl in ("lax", "onednn")}
    (l_lax, logits_lax), g_lax = outs["lax"]
    (l_dnn, logits_dnn), g_dnn = outs["onednn"]
    _close(logits_dnn, logits_lax, tol=1e-4)
    for a, b in zip(jax.tree.leaves(g_dnn), jax.tree.leaves(g_lax)):
        _close(a, b, tol=1e-3)


def test_unavailable_library_is_reported(monkeypatch, tmp_path):
    """Without oneDNN's headers and library, available() is False and says how to install
    them; no compiler is run."""
    monkeypatch.setattr(onednn, "_state", {})
    monkeypatch.setenv(onednn.ENV_ROOT, str(tmp_path))
    assert not onednn.available()
    assert "pip install onednn-cpu-gomp" in onednn.unavailable_reason()
    assert onednn.version() is None
    x = jnp.ones((1, 4, 4, 2))
    with pytest.raises(Exception, match="oneDNN convolutions are unavailable"):
        jax.jit(lambda a: onednn.conv(a, jnp.ones((1, 1, 2, 2)))).lower(x)


@needs_onednn
def test_build_is_cached(monkeypatch, tmp_path):
    """The shim is compiled once per source, jaxlib and oneDNN, then reused."""
    monkeypatch.setenv(onednn.ENV_CACHE, str(tmp_path))
    root = onednn._onednn_root()
    first = onednn._build(root)
    assert first.is_file() and str(first).startswith(str(tmp_path))
    stamp = first.stat().st_mtime_ns
    assert onednn._build(root) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no leftovers


def test_benchmark_names_the_primitives_in_its_device_column(monkeypatch):
    from jaxvision import benchmark
    monkeypatch.setattr(onednn, "available", lambda: True)
    monkeypatch.setattr(onednn, "version", lambda: "3.2.0")
    monkeypatch.delenv(conv_impl.ENV_VAR, raising=False)
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    assert benchmark.onednn_primitives() == "oneDNN 3.2.0 primitives, "
    assert "oneDNN 3.2.0 primitives, " in benchmark.device_name(jax.devices()[0])
    monkeypatch.setenv(conv_impl.ENV_VAR, "xla")
    assert benchmark.onednn_primitives() == ""
    monkeypatch.setenv(conv_impl.ENV_VAR, "auto")
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    assert benchmark.onednn_primitives() == ""
    monkeypatch.setattr(onednn, "available", lambda: False)
    monkeypatch.setenv(conv_impl.ENV_VAR, "onednn")
    assert benchmark.onednn_primitives() == ""


def test_primitives_refuse_other_dtypes_and_misfit_shapes():
    """The foreign calls read raw float32 buffers: anything else is refused while tracing."""
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
    with pytest.raises(TypeError, match="float32 only"):
        jax.eval_shape(onednn.conv, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="does not fit"):
        jax.eval_shape(lambda g: onednn.dgrad(g, w, (2, 9, 9, 4)), jnp.ones((2, 6, 6, 6)))
    with pytest.raises(ValueError, match="does not fit"):
        jax.eval_shape(lambda g: onednn.wgrad(x, g, (3, 3, 4, 6)), jnp.ones((2, 8, 8, 6)))
    assert jax.eval_shape(lambda g: onednn.wgrad(x, g, (3, 3, 4, 6)),
                          jnp.ones((2, 6, 6, 6))).shape == (3, 3, 4, 6)


def _has_bfloat16_units() -> bool:
    from jaxvision.backends.cpu.platform import cpuinfo_field
    flags = set((cpuinfo_field("flags") or "").split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


@needs_onednn
def test_bfloat16_math_rounds_like_bfloat16_and_is_cached_apart_from_float32():
    """``precision='bfloat16'`` lets oneDNN multiply in bfloat16 (8-bit significand) with
    float32 accumulation: every pass stays within that rounding of lax's float32 result; on a
    CPU with bfloat16 units all three passes do round; and the float32
    primitive of the same geometry, built after the bfloat16 one, is still exact (the
    handlers cache a primitive per math mode)."""
    x, w = _rand((4, 14, 14, 32), 0), _rand((3, 3, 32, 32), 1)
    ct = _rand((4, 14, 14, 32), 2)
    pads = ((1, 1), (1, 1))

    def passes(f):
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(ct))

    ref = passes(lambda a, b: _lax(a, b, (1, 1), pads))
    run = {p: jax.jit(lambda p=p: passes(
        lambda a, b: onednn.conv(a, b, pads=pads, precision=p)))() for p in onednn.FPMATH}
    for got, want in zip(run["bfloat16"], ref):
        _close(got, want, tol=1e-2)
    for got, want in zip(run["float32"], ref):
        _close(got, want)
    if _has_bfloat16_units():
        for got, want in zip(run["bfloat16"], ref):
            scale = float(jnp.max(jnp.abs(want)))
            assert float(jnp.max(jnp.abs(got - want))) > 1e-4 * scale
    with pytest.raises(ValueError, match="precision 'bf16' is not one of float32, bfloat16"):
        onednn.conv(x, w, precision="bf16")


@needs_onednn
def test_conv_precision_reaches_every_pass_of_a_traced_layer():
    """``kernels.use(conv_precision=...)`` is read while a layer is traced: each oneDNN pass
    of its forward and gradient carries it; the default is float32."""
    layer = Conv(8, (3, 3), padding=pad(1))
    x = jnp.ones((2, 8, 8, 4))
    params = layer.init(jax.random.PRNGKey(0), x)

    def precisions(j, seen):
        for eqn in j.eqns:
            if eqn.primitive.name.startswith("jaxvision_onednn_conv"):
                seen[eqn.primitive.name] = eqn.params["precision"]
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                precisions(sub, seen)
        return seen

    for asked, want in (("", "float32"), ("bfloat16", "bfloat16")):
        with kernels.use(conv="onednn", conv_precision=asked):
            jaxpr = jax.make_jaxpr(jax.grad(
                lambda p, v: jnp.sum(layer.apply(p, v) ** 2), argnums=(0, 1)))(params, x)
        assert precisions(jaxpr.jaxpr, {}) == {
            f"jaxvision_onednn_conv_{p}": want for p in ("fwd", "dgrad", "wgrad")}
