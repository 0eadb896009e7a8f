"""Normalizer-free networks: scaled WS conv, blocks, timm equivalence, AGC convention.

Golden parameter counts (tests/golden/nfnet.json) are timm 1.0.31's trainable-parameter
counts, ``sum(p.numel() for p in m.parameters())``; ``test_golden_counts_equal_timm``
re-derives them from timm.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import jaxvision
from jaxvision.layers.pooling import avg_pool
from jaxvision.layers.std_conv import ScaledStdConv
from jaxvision.utils import param_count
from tests.quick_compile import jit_o0

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "nfnet.json")


# The 'rbg' key compiles much faster than threefry on CPU; init values are still random.
def _key(seed=0):
    return jax.random.key(seed, impl="rbg")


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# -- scaled weight standardisation ---------------------------------------------------------

def test_scaled_std_conv_standardizes_each_output_filter():
    conv = ScaledStdConv(6, 3, strides=2, padding="SAME", gamma=1.7, eps=1e-5,
                         feature_group_count=2)
    x = _x((2, 9, 10, 4))
    variables = conv.init(jax.random.key(0), x)
    p = variables["params"]
    gain = jnp.linspace(0.5, 1.5, 6)
    p = {**p, "gain": gain, "bias": jnp.arange(6.0)}
    k = np.asarray(p["kernel"], np.float64)  # (3, 3, 2, 6)
    assert k.shape == (3, 3, 2, 6)
    fan_in = 3 * 3 * 2
    ref = (k - k.mean((0, 1, 2))) / np.sqrt(k.var((0, 1, 2)) + 1e-5) * np.asarray(gain) * 1.7 \
        / np.sqrt(fan_in)
    w = conv.apply({"params": p}, p["kernel"], p["gain"], method=ScaledStdConv.standardized_kernel)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5, atol=1e-6)
    # Per output filter: zero mean, norm = gain * gamma (up to eps).
    np.testing.assert_allclose(np.asarray(w).mean((0, 1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w).reshape(-1, 6), axis=0),
                               np.asarray(gain) * 1.7, rtol=1e-3)

    y = conv.apply({"params": p}, x)
    # TF 'SAME' at stride 2 on 9x10: pads (1, 1) rows and (0, 1) columns.
    ref_y = lax.conv_general_dilated(x, jnp.asarray(ref, jnp.float32), (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=2) + jnp.arange(6.0)
    assert y.shape == (2, 5, 5, 6)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref_y), rtol=1e-5, atol=1e-5)


def test_scaled_std_conv_rejects_bad_input():
    conv = ScaledStdConv(4, 3, feature_group_count=2)
    with pytest.raises(ValueError, match="rank 4"):
        conv.init(jax.random.key(0), jnp.zeros((8, 8, 4)))
    with pytest.raises(ValueError, match="feature_group_count"):
        conv.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="padding"):
        ScaledStdConv(4, 3, padding="VALID").init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))


# -- model behaviour -----------------------------------------------------------------------

def test_residual_branches_start_switched_off():
    """Zero-init of the last conv gain (NF-ResNet) / skipinit gain (DeepMind NFNet)."""
    x = _x((2, 32, 32, 3))
    for name, kwargs in [("test_nf_resnet", {"zero_init_last": True}),
                         ("test_nfnet", {"zero_init_last": True, "skipinit": True})]:
        model = jaxvision.create_model(name, **kwargs)
        v = jit_o0(model.init)(_key(), x)
        block = v["params"]["stages_1_0"]
        if kwargs.get("skipinit"):
            assert float(block["skipinit_gain"]) == 0.0
            assert np.all(np.asarray(block["conv3"]["gain"]) == 1.0)
        else:
            assert "skipinit_gain" not in block
            assert not np.any(np.asarray(block["conv3"]["gain"]))
        # The block's branch cannot affect the output: perturb its first conv.
        p2 = jax.tree.map(lambda a: a, v["params"])
        p2["stages_1_0"]["conv1"]["kernel"] = p2["stages_1_0"]["conv1"]["kernel"] + 1.0
        apply = jit_o0(model.apply)
        np.testing.assert_array_equal(np.asarray(apply(v, x)), np.asarray(apply({"params": p2}, x)))
    # The tiny registered variants start switched on (so every parameter gets a gradient).
    v = jit_o0(jaxvision.create_model("test_nfnet").init)(_key(), x)
    assert np.all(np.asarray(v["params"]["stages_1_0"]["conv3"]["gain"]) == 1.0)


def test_drop_path_only_in_training():
    x = _x((8, 32, 32, 3))
    model = jaxvision.create_model("test_nf_resnet", drop_path_rate=0.5)
    v = jit_o0(model.init)(_key(), x)
    eval_out = jit_o0(model.apply)(v, x)
    plain = jit_o0(jaxvision.create_model("test_nf_resnet").apply)(v, x)
    np.testing.assert_array_equal(np.asarray(eval_out), np.asarray(plain))
    train = jit_o0(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, b = train(v, x, _key(1)), train(v, x, _key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    assert np.all(np.isfinite(np.asarray(a)))


def test_features_dtype_and_bad_input():
    model = jaxvision.create_model("test_nfnet", num_classes=0, dtype=jnp.bfloat16)
    x = _x((2, 32, 32, 3))
    v = jax.jit(model.init)(_key(), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    feats = jax.jit(model.apply)(v, x)
    assert feats.shape == (2, 192) and feats.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="rank 4"):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="activation"):
        jax.eval_shape(jaxvision.create_model("test_nfnet", act="swish").init,
                       jax.random.key(0), x)


# -- AGC: optax.adaptive_grad_clip on Flax layouts -------------------------------------------

def _agc_reference(g, w, reduce_axes, clipping=0.01, eps=1e-3):
    """Brock et al. (2021), Eq. 3 per unit i: if ||G_i|| / max(||W_i||, eps) > lambda,
    G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i."""
    w_norm = np.maximum(np.sqrt(np.sum(w.astype(np.float64) ** 2, reduce_axes, keepdims=True)), eps)
    g_norm = np.sqrt(np.sum(g.astype(np.float64) ** 2, reduce_axes, keepdims=True))
    clip = g_norm / w_norm > clipping
    return np.where(clip, g * clipping * w_norm / g_norm, g), clip


def test_optax_agc_clips_per_output_unit_of_flax_kernels():
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)  # HWIO
    dense_w = rng.standard_normal((16, 6)).astype(np.float32)  # (in, out)
    bias = rng.standard_normal(8).astype(np.float32)
    # Gradient scales spread over 4 decades so that some units clip and others do not.
    conv_g = (rng.standard_normal(conv_w.shape) * np.logspace(-4, 0, 8)).astype(np.float32)
    dense_g = (rng.standard_normal(dense_w.shape) * np.logspace(-4, 0, 6)).astype(np.float32)
    bias_g = (0.001 * rng.standard_normal(8)).astype(np.float32)
    params = {"conv": {"kernel": conv_w, "bias": bias}, "dense": {"kernel": dense_w}}
    grads = {"conv": {"kernel": conv_g, "bias": bias_g}, "dense": {"kernel": dense_g}}
    tx = optax.adaptive_grad_clip(0.01)
    out, _ = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(params), params)

    # Units = output channels: norms over every other axis of HWIO and (in, out) kernels.
    ref_conv, clip_conv = _agc_reference(conv_g, conv_w, (0, 1, 2))
    ref_dense, clip_dense = _agc_reference(dense_g, dense_w, (0,))
    # A vector (bias, gain) is a single unit, as in the paper's reference code.
    ref_bias, _ = _agc_reference(bias_g, bias, (0,))
    assert clip_conv.any() and not clip_conv.all()
    assert clip_dense.any() and not clip_dense.all()
    np.testing.assert_allclose(np.asarray(out["conv"]["kernel"]), ref_conv, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(out["dense"]["kernel"]), ref_dense, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(out["conv"]["bias"]), ref_bias, rtol=1e-5, atol=1e-8)
    # After clipping, no output unit's gradient norm exceeds 1% of its weight norm.
    ratio = (np.linalg.norm(np.asarray(out["conv"]["kernel"]).reshape(-1, 8), axis=0)
             / np.linalg.norm(conv_w.reshape(-1, 8), axis=0))
    assert np.all(ratio <= 0.01 * (1 + 1e-5))

    # Caveat: optax squeezes first, so a kernel whose other axes are all 1 (a 1x1 conv on a
    # single input channel, or a Dense with one input) is treated as ONE unit, not per output.
    w1 = rng.standard_normal((1, 1, 1, 8)).astype(np.float32)
    g1 = (rng.standard_normal((1, 1, 1, 8)) * np.logspace(-4, 0, 8)).astype(np.float32)
    out1, _ = tx.update(jnp.asarray(g1), tx.init(w1), w1)
    whole, _ = _agc_reference(g1, w1, (0, 1, 2, 3))
    np.testing.assert_allclose(np.asarray(out1), whole, rtol=1e-5, atol=1e-8)
    per_unit, _ = _agc_reference(g1, w1, (0, 1, 2))
    assert not np.allclose(whole, per_unit)


# -- torch (timm) reference ----------------------------------------------------------------

def _timm_random(factory, seed=0):
    """A timm model with random weights, built without timm's (slow) initialisers: fan-in
    scaled normal kernels, and every gain, including zero-initialised conv3 gains and the
    scalar skipinit gains, near 1 so that each residual branch contributes."""
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        m = factory()
    m = m.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gain"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.zero_()  # biases: randomised by torch_ref.randomize_
    return m


def _timm_test_nf_resnet():
    from dataclasses import replace

    from timm.models.nfnet import NormFreeNet, _nfres_cfg
    cfg = replace(_nfres_cfg(depths=(1, 1, 1, 1), channels=(16, 32, 48, 64)), stem_chs=16)
    return NormFreeNet(cfg, num_classes=10)


@pytest.mark.torch
@pytest.mark.parametrize("name,input_hw,batch", [
    ("test_nf_resnet", (37, 45), 2),  # odd sizes: ceil-mode average-pool shortcuts
    ("test_nfnet", (32, 32), 2),
    ("nf_resnet50", (48, 48), 1),
    ("dm_nfnet_f0", (48, 48), 1),  # asymmetric TF 'SAME' pads and a ceil-mode pool
])
def test_equivalence_with_timm(name, input_hw, batch):
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from tests.torch_ref import check_equivalence
    factory = _timm_test_nf_resnet if name == "test_nf_resnet" else (lambda: timm.create_model(name))
    check_equivalence(name, _timm_random(factory), input_hw=input_hw, batch=batch)


def ceil_avg_pool(x):
    return avg_pool(x, 2, 2, ceil_mode=True, count_include_pad=False)


@pytest.mark.torch
def test_avg_pool_ceil_matches_torch():
    torch = pytest.importorskip("torch")
    pool = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    for h, w in [(1, 1), (3, 4), (5, 7), (6, 6)]:
        x = np.random.default_rng(h * w).standard_normal((2, h, w, 3)).astype(np.float32)
        ref = pool(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(ceil_avg_pool(jnp.asarray(x))), ref,
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from tests.torch_ref import trainable_count
    with open(GOLDEN) as f:
        golden = json.load(f)
    family = {n for n in jaxvision.list_models(exclude="test_*")
              if jaxvision.registry.model_family(n) == "nfnet"}
    assert set(golden) == family
    assert {"nf_resnet50", "dm_nfnet_f0", "dm_nfnet_f6", "nfnet_f0"} <= set(golden)
    for name, count in golden.items():
        with torch.device("meta"):
            assert trainable_count(timm.create_model(name)) == count, name
    with torch.device("meta"):
        tiny = {"test_nfnet": timm.create_model("test_nfnet"), "test_nf_resnet": _timm_test_nf_resnet()}
    for name, m in tiny.items():
        ours = param_count(jaxvision.create_model(name),
                                           jaxvision.model_cfg(name)["input_size"])
        assert ours == trainable_count(m), name
