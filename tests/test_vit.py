"""Vision Transformer: parameter counts, equivalence with timm, position-embedding resampling,
the fused attention path, drop-path and input checks.

Golden counts (tests/golden/vit.json) are timm 1.0.31's trainable parameter counts of
``timm.create_model(name, num_classes=1000)`` (re-checked below against timm on the meta
device).  timm's default heads for vit_large_patch32_224, vit_huge_patch14_224 (ImageNet-21k
features) and vit_small_patch8_224 (DINO) have no classifier; we register all variants with
the ImageNet-1k head.  The two reference targets are asserted explicitly.

Equivalence runs every distinct architecture at a small resolution (timm and jaxvision
both built with the same small ``img_size``); the ``_384`` variants differ from their
``_224`` counterparts only in ``img_size``, which is checked structurally.
"""
import gc
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.layers.attention_vit import (ATTENTION_ENV_VAR, Attention, attention_impl,
                                           explicit_attention)
from jaxvision.layers.drop import DropPath
from jaxvision.models.vit import resample_abs_pos_embed, resample_pos_embed
from jaxvision.utils import param_count, param_shapes, variable_shapes

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "vit.json")))
VIT_224 = [n for n in jaxvision.list_models("vit_*") if n.endswith("_224")]
VIT_384 = [n for n in jaxvision.list_models("vit_*") if n.endswith("_384")]


def _init(module, x, seed=0, **kwargs):
    """Random variables for ``module`` without running its initialisers: shapes come from
    jax.eval_shape and values from numpy (compiling every initialiser costs more on CPU than
    the tests themselves)."""
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **kwargs), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), shapes)


def _randn(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _key(seed):
    # The counter-based 'unsafe_rbg' generator compiles several times faster on CPU than the
    # default threefry, and the tests only need distinct, reproducible dropout masks.
    return jax.random.key(seed, impl="unsafe_rbg")


def _jit_apply(module):
    return jax.jit(module.apply, static_argnames="train")


def _small_img(name):
    """Smallest convenient resolution: a 2x2 patch grid (4x4 for patch 8)."""
    patch = jaxvision.create_model(name).patch_size
    return max(2 * patch, 32)


def _random_timm(name, img, **kwargs):
    """A timm model with every weight random: built on the meta device (no init cost), then
    filled uniformly; torch_ref.randomize_ later redraws the 1-D scales and biases."""
    import timm
    import torch
    with torch.device("meta"):
        tm = timm.create_model(name, pretrained=False, img_size=img, **kwargs)
    tm = tm.to_empty(device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tm.parameters():
            p.uniform_(-0.05, 0.05, generator=g)
    return tm


def _check_converted(name, tmodel, img, batch, **jax_kwargs):
    """from_torch on randomised weights, eval logits within 1e-4 relative of torch's.

    Like torch_ref.check_equivalence but applied op by op: for 24-32 unrolled blocks, XLA's
    CPU compile time would dominate the test."""
    from tests.torch_ref import assert_logits_close, randomize_, torch_logits
    from jaxvision.convert import from_torch

    randomize_(tmodel, 0)
    x = np.random.default_rng(0).standard_normal((batch, img, img, 3)).astype(np.float32)
    variables = from_torch(name, tmodel.state_dict(), input_size=(img, img, 3), img_size=img,
                           **jax_kwargs)
    model = jaxvision.create_model(name, img_size=img, **jax_kwargs)
    out = model.apply(variables, jnp.asarray(x), train=False)
    assert_logits_close(out, torch_logits(tmodel, x))


# ---------------------------------------------------------------------------------------------
# Parameter counts


def test_reference_targets():
    for name, target in [("vit_small_patch16_224", 22_050_664),
                         ("vit_base_patch16_224", 86_567_656)]:
        assert param_count(jaxvision.create_model(name), (224, 224, 3)) == target


def test_registered_variants_cover_paper_sizes():
    names = set(jaxvision.list_models("vit_*"))
    for size in ("tiny", "small", "base", "large"):
        for patch in (16, 32) if size != "tiny" else (16,):
            assert f"vit_{size}_patch{patch}_224" in names
    assert {"vit_base_patch8_224", "vit_huge_patch14_224"} <= names
    assert set(GOLDEN) == names


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    for name, count in GOLDEN.items():
        with torch.device("meta"):
            tm = timm.create_model(name, pretrained=False, num_classes=1000)
        assert sum(p.numel() for p in tm.parameters() if p.requires_grad) == count, name


@pytest.mark.parametrize("name", VIT_384)
def test_384_variant_is_224_architecture_at_384(name):
    base = name.replace("_384", "_224")
    m384, m224 = jaxvision.create_model(name), jaxvision.create_model(base)
    assert m384.img_size == 384 and m224.img_size == 224
    assert jaxvision.model_cfg(name)["input_size"] == (384, 384, 3)
    assert m384 == m224.clone(img_size=384)
    # Same weights apart from the position-embedding grid (24x24 vs 14x14 for /16).
    s384 = jax.tree.map(lambda s: s.shape, param_shapes(m384, (384, 384, 3)))
    s224 = jax.tree.map(lambda s: s.shape, param_shapes(m224, (224, 224, 3)))
    s384.pop("pos_embed"), s224.pop("pos_embed")
    assert s384 == s224


# ---------------------------------------------------------------------------------------------
# Equivalence with timm


@pytest.mark.torch
@pytest.mark.parametrize("name", VIT_224)
def test_timm_equivalence(name):
    pytest.importorskip("timm")
    img = _small_img(name)
    batch = 1 if ("large" in name or "huge" in name) else 2
    tmodel = _random_timm(name, img, num_classes=1000)
    _check_converted(name, tmodel, img, batch)
    del tmodel
    gc.collect()


@pytest.mark.torch
@pytest.mark.parametrize("kwargs", [dict(), dict(global_pool="avg"),
                                    dict(global_pool="avg", class_token=False),
                                    dict(global_pool="max", qkv_bias=False),
                                    dict(num_classes=0)])
def test_tiny_timm_equivalence_options(kwargs):
    """test_vit (our own tiny config; timm's test_vit is a different model) against timm's
    VisionTransformer class with the same arguments, across pooling/head options."""
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer
    from tests.torch_ref import check_equivalence

    tm = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                           **dict(dict(num_classes=10), **kwargs))
    check_equivalence("test_vit", tm, input_hw=(32, 32), batch=2, **kwargs)


# ---------------------------------------------------------------------------------------------
# Position embeddings at a new resolution


def _tiny_224(**kw):
    return jaxvision.create_model("vit_tiny_patch16_224", embed_dim=16, depth=1, num_heads=2,
                                  num_classes=5, **kw)


@pytest.mark.torch
@pytest.mark.parametrize("interpolation,antialias", [("bicubic", True), ("bilinear", True),
                                                     ("bilinear", False)])
def test_resample_matches_timm(interpolation, antialias):
    torch = pytest.importorskip("torch")
    from timm.layers import resample_abs_pos_embed as timm_resample

    model = _tiny_224()
    variables = _init(model, jnp.zeros((1, 224, 224, 3)))
    pe = np.asarray(variables["params"]["pos_embed"])
    assert pe.shape == (1, 1 + 14 * 14, 16)
    for new in [(24, 24), (10, 7)]:
        new_vars = resample_pos_embed(variables, new, interpolation=interpolation,
                                      antialias=antialias)
        ref = timm_resample(torch.from_numpy(pe), list(new), num_prefix_tokens=1,
                            interpolation=interpolation, antialias=antialias).numpy()
        got = np.asarray(new_vars["params"]["pos_embed"])
        assert got.shape == ref.shape == (1, 1 + new[0] * new[1], 16)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(got[:, 0], pe[:, 0])  # class token untouched
    # The input is left as it was.
    np.testing.assert_array_equal(np.asarray(variables["params"]["pos_embed"]), pe)


def test_resampled_variables_run_at_384_and_match_dynamic_mode():
    model = _tiny_224()
    variables = _init(model, jnp.zeros((1, 224, 224, 3)))
    x = _randn((2, 384, 384, 3), 1)
    with pytest.raises(ValueError, match="img_size"):
        model.apply(variables, x)
    v384 = resample_pos_embed(variables, (24, 24))
    out = _tiny_224(img_size=384).apply(v384, x)
    assert out.shape == (2, 5) and np.all(np.isfinite(np.asarray(out)))
    # dynamic_img_size resamples the 224 embeddings on the fly, to the same result.
    dyn = _tiny_224(dynamic_img_size=True).apply(variables, x)
    np.testing.assert_allclose(np.asarray(dyn), np.asarray(out), atol=1e-5, rtol=1e-5)
    # Resampling to the same grid is the identity.
    same = resample_pos_embed(variables, (14, 14))["params"]["pos_embed"]
    np.testing.assert_array_equal(np.asarray(same), np.asarray(variables["params"]["pos_embed"]))


def test_resample_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        resample_abs_pos_embed(jnp.zeros((1, 1 + 12, 4)), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        resample_abs_pos_embed(jnp.zeros((10, 4)), (4, 4))
    with pytest.raises(ValueError, match="interpolation"):
        resample_abs_pos_embed(jnp.zeros((1, 17, 4)), (5, 5), interpolation="nearest")
    with pytest.raises(ValueError, match="pos_embed"):
        resample_pos_embed({"params": {}}, (4, 4))


# ---------------------------------------------------------------------------------------------
# Attention


def test_attention_calls_dot_product_attention_and_matches_softmax(monkeypatch):
    calls = []
    real = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    layer = Attention(num_heads=4)
    x = _randn((2, 7, 32), 0)
    variables = _init(layer, x)
    out = layer.apply(variables, x)
    assert calls and calls[0] == (2, 7, 4, 8)  # (B, N, heads, head_dim)

    # Reference: explicit softmax(QK^T / sqrt(d)) V in float64 numpy from the same weights.
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    xx = np.asarray(x, np.float64)
    qkv = (xx @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(2, 7, 3, 4, 8)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, N, d)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ref = (w @ v).transpose(0, 2, 1, 3).reshape(2, 7, 32) @ p["proj"]["kernel"] + p["proj"]["bias"]
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)

    q, k, v = (_randn((2, 5, 3, 8), i) for i in range(3))
    np.testing.assert_allclose(np.asarray(explicit_attention(q, k, v)),
                               np.asarray(real(q, k, v)), atol=1e-5, rtol=1e-5)


def test_attention_kernel_choice(monkeypatch):
    """auto: XLA's attention off GPU or for float32; cuDNN's fused kernel for 16-bit inputs
    on a GPU of compute capability >= 8.0 with a supported head size; the environment
    variable overrides, and a typo in it is an error naming the choices."""
    monkeypatch.delenv(ATTENTION_ENV_VAR, raising=False)
    bf16 = jnp.zeros((1, 4, 2, 64), jnp.bfloat16)
    assert attention_impl(bf16) == "xla"  # this machine's backend is the CPU

    class FakeGpu:
        def __init__(self, capability):
            self.compute_capability = capability

    for capability, dtype, head_dim, want in [
            ("9.0", jnp.bfloat16, 64, "cudnn"), ("8.0", jnp.float16, 128, "cudnn"),
            ("7.0", jnp.bfloat16, 64, "xla"), ("9.0", jnp.float32, 64, "xla"),
            ("9.0", jnp.bfloat16, 60, "xla"), ("9.0", jnp.bfloat16, 256, "xla")]:
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        monkeypatch.setattr(jax, "devices", lambda c=capability: [FakeGpu(c)])
        q = jnp.zeros((1, 4, 2, head_dim), dtype)
        assert attention_impl(q) == want, (capability, dtype, head_dim)
    monkeypatch.undo()

    monkeypatch.setenv(ATTENTION_ENV_VAR, "XLA")
    assert attention_impl(bf16) == "xla"
    monkeypatch.setenv(ATTENTION_ENV_VAR, "cudnn")
    assert attention_impl(bf16) == "cudnn"
    monkeypatch.setenv(ATTENTION_ENV_VAR, "flash")
    with pytest.raises(ValueError, match="JAXVISION_ATTENTION_IMPL='flash'.*auto, xla, cudnn"):
        attention_impl(bf16)


def test_fused_attention_falls_back_to_xla_only_under_auto(monkeypatch):
    import jaxvision.layers.attention_vit as av
    real = jax.nn.dot_product_attention
    asked = []

    def no_cudnn(q, k, v, implementation=None, **kw):
        asked.append(implementation)
        if implementation == "cudnn":
            raise NotImplementedError("unsupported sequence length")
        return real(q, k, v, implementation=implementation)

    monkeypatch.setattr(jax.nn, "dot_product_attention", no_cudnn)
    monkeypatch.setattr(av, "attention_impl", lambda q: "cudnn")  # as auto picks on a GPU
    monkeypatch.delenv(ATTENTION_ENV_VAR, raising=False)
    q, k, v = (_randn((2, 5, 3, 8), i) for i in range(3))
    np.testing.assert_allclose(np.asarray(av.fused_attention(q, k, v)),
                               np.asarray(real(q, k, v)), atol=1e-6)
    assert asked == ["cudnn", "cudnn", "xla"]  # odd token count: a padded try, then XLA
    monkeypatch.setenv(ATTENTION_ENV_VAR, "cudnn")  # asked for by name: the error stands
    with pytest.raises(NotImplementedError):
        av.fused_attention(q, k, v)


def test_cudnn_attention_pads_an_odd_token_count(monkeypatch):
    """A kernel that refuses odd sequence lengths gets one padded, masked token; values and
    gradients equal unpadded attention's.  (XLA's attention stands in for cuDNN's here.)"""
    import jaxvision.layers.attention_vit as av
    real = jax.nn.dot_product_attention
    seen = []

    def even_only(q, k, v, implementation=None, **kw):
        assert implementation == "cudnn"
        seen.append((q.shape[1], "key_value_seq_lengths" in kw))
        if q.shape[1] % 2:
            raise NotImplementedError(f"Unsupported sequence length Q {q.shape[1]}")
        return real(q, k, v, implementation="xla", **kw)

    q, k, v = (_randn((2, 7, 3, 8), i) for i in range(3))
    ct = _randn((2, 7, 3, 8), 5)

    def loss(attn, q, k, v):
        return jnp.sum(attn(q, k, v) * ct)

    want = jax.value_and_grad(lambda *a: loss(real, *a), argnums=(0, 1, 2))(q, k, v)
    monkeypatch.setattr(jax.nn, "dot_product_attention", even_only)
    got = jax.value_and_grad(lambda *a: loss(av.cudnn_attention, *a), argnums=(0, 1, 2))(
        q, k, v)
    assert seen == [(7, False), (8, True)]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, rtol=1e-5)


def test_attention_dropout_only_in_training():
    layer = Attention(num_heads=2, attn_dropout_rate=0.5)
    x = _randn((2, 6, 8), 0)
    variables = _init(layer, x)
    apply = _jit_apply(layer)
    eval_out = apply(variables, x, train=False)
    a = apply(variables, x, train=True, rngs={"dropout": _key(2)})
    b = apply(variables, x, train=True, rngs={"dropout": _key(3)})
    assert not np.allclose(np.asarray(a), np.asarray(eval_out))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(
        np.asarray(layer.clone(attn_dropout_rate=0.0).apply(variables, x, train=True)),
        np.asarray(eval_out), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Model behaviour


def test_drop_path_drops_whole_samples_and_rescales():
    x = jnp.ones((256, 3, 4))
    y = np.asarray(DropPath(0.25).apply({}, x, deterministic=False,
                                         rngs={"dropout": _key(0)}))
    per_sample = y.reshape(256, -1)
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.75).all(1))
    kept = np.isclose(per_sample[:, 0], 1 / 0.75).mean()
    assert 0.6 < kept < 0.9
    np.testing.assert_array_equal(np.asarray(DropPath(0.25).apply({}, x, deterministic=True)),
                                  np.asarray(x))


def test_training_mode_uses_dropout_rng_and_eval_is_deterministic():
    model = jaxvision.create_model("test_vit", drop_path_rate=0.5, drop_rate=0.2,
                                   attn_drop_rate=0.1, proj_drop_rate=0.1, pos_drop_rate=0.1)
    x = _randn((4, 32, 32, 3), 0)
    variables = _init(model, x)
    apply = _jit_apply(model)
    e1, e2 = apply(variables, x), apply(variables, x)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    t1 = apply(variables, x, train=True, rngs={"dropout": _key(2)})
    t2 = apply(variables, x, train=True, rngs={"dropout": _key(3)})
    assert not np.allclose(np.asarray(t1), np.asarray(t2))
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True)


def test_features_and_dtype():
    x = _randn((2, 32, 32, 3), 0)
    feats = jaxvision.create_model("test_vit", num_classes=0)
    variables = _init(feats, x)
    assert _jit_apply(feats)(variables, x).shape == (2, 32)
    assert "head" not in variables["params"]
    half = jaxvision.create_model("test_vit", dtype=jnp.bfloat16)
    variables = _init(half, x)
    out = _jit_apply(half)(variables, x)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 10)
    shapes = variable_shapes(half, (32, 32, 3))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))  # params stay f32
    full = _jit_apply(jaxvision.create_model("test_vit"))(variables, x)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(full), atol=0.1, rtol=0.1)


def test_bad_inputs_raise_clear_errors():
    model = jaxvision.create_model("test_vit")
    variables = _init(model, jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="img_size"):
        model.apply(variables, jnp.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="global_pool"):
        _init(jaxvision.create_model("test_vit", global_pool="mean"), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="class_token"):
        _init(jaxvision.create_model("test_vit", class_token=False), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="divisible"):
        _init(jaxvision.create_model("test_vit", num_heads=3), jnp.zeros((1, 32, 32, 3)))


def test_every_block_attends_through_dot_product_attention(monkeypatch):
    calls = []
    real = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    model = jaxvision.create_model("test_vit", depth=3)
    x = jnp.zeros((2, 32, 32, 3))
    variables = _init(model, x)
    calls.clear()
    model.apply(variables, x)
    assert calls == [(2, 17, 2, 16)] * 3  # 16 patches + class token, 2 heads of 16
