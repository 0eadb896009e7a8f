"""ResNeSt (Zhang et al., 2020): split attention, parameter counts and equivalence with timm.

Golden counts (tests/golden/resnest.json) are timm 1.0.31's parameter counts of
``timm.create_model(name)`` (1000 classes), re-checked against timm below; the reference
target resnest50d = 27,483,240 is asserted explicitly.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.layers.helpers import make_divisible
from jaxvision.layers.split_attn import SplitAttn, radix_softmax
from jaxvision.utils import param_count
from tests.quick_compile import jit_o0

with open(os.path.join(os.path.dirname(__file__), "golden", "resnest.json")) as _f:
    GOLDEN = json.load(_f)


def test_reference_target_and_registry():
    assert param_count(jaxvision.create_model("resnest50d"), (224, 224, 3)) == 27_483_240
    assert set(GOLDEN) == set(jaxvision.list_models("resnest*"))
    assert jaxvision.model_cfg("resnest269e")["input_size"] == (416, 416, 3)


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    assert set(GOLDEN) == set(timm.list_models("resnest*"))
    for name, count in GOLDEN.items():
        with torch.device("meta"):
            tm = timm.create_model(name, pretrained=False)
        assert sum(p.numel() for p in tm.parameters()) == count, name


def test_make_divisible_matches_timm_rule():
    assert make_divisible(64 * 2 * 0.25, min_value=32) == 32
    assert make_divisible(256 * 2 * 0.25, min_value=32) == 128
    assert make_divisible(100, 8) == 104  # rounds to nearest multiple, never < 90% of v


@pytest.mark.parametrize("radix,cardinality", [(1, 2), (2, 1), (4, 2)])
def test_split_attention_weights_sum_to_one_over_splits(radix, cardinality):
    logits = jax.random.normal(jax.random.key(0), (3, cardinality * radix * 5))
    a = radix_softmax(logits, radix, cardinality)
    assert a.shape == (3, radix, cardinality * 5)
    if radix == 1:
        np.testing.assert_allclose(a[:, 0], jax.nn.sigmoid(logits), rtol=1e-6)
    else:
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)


def test_split_attention_output_is_convex_combination_of_splits():
    """With radix 2 each output channel lies between its two split features (post-ReLU)."""
    layer = SplitAttn(8, cardinality=2, radix=2)
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 8))
    variables = layer.init(jax.random.key(2), x)
    out, inter = layer.apply(variables, x, capture_intermediates=True)
    assert out.shape == (2, 6, 6, 8)
    bn0 = inter["intermediates"]["bn0"]["__call__"][0]
    splits = jax.nn.relu(bn0).reshape(2, 6, 6, 2, 8)
    lo, hi = splits.min(axis=3), splits.max(axis=3)
    assert bool(jnp.all(out >= lo - 1e-5)) and bool(jnp.all(out <= hi + 1e-5))


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="rank 4"):
        jaxvision.create_model("test_resnest").init(jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="cardinality"):
        SplitAttn(6, cardinality=4).init(jax.random.key(0), jnp.zeros((1, 4, 4, 6)))


def test_num_classes_zero_gives_features():
    model = jaxvision.create_model("test_resnest", num_classes=0)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out, _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert out.shape == (2, 32)  # 4 * channels[-1]


def test_drop_path_changes_training_output_only():
    model = jaxvision.create_model("test_resnest", drop_path_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    v = jit_o0(model.init)(jax.random.key(1), x)
    ev = jit_o0(lambda v, x: model.apply(v, x))
    np.testing.assert_array_equal(ev(v, x), ev(v, x))
    tr_fn = jit_o0(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k},
                                               mutable=["batch_stats"])[0])
    tr = [tr_fn(v, x, jax.random.key(k)) for k in (0, 1)]
    assert not np.allclose(tr[0], tr[1])


# ---------------------------------------------------------------------------------------------
# Equivalence with timm


def _check(name, tmodel, hw=64, batch=2, **jax_kwargs):
    """from_torch on randomised weights; eval logits within 1e-4 relative of torch's.
    Jitted: op-by-op execution compiles every distinct op shape and costs more CPU."""
    from jaxvision.convert import from_torch
    from tests.torch_ref import assert_logits_close, randomize_, torch_logits

    randomize_(tmodel, 0)
    x = np.random.default_rng(0).standard_normal((batch, hw, hw, 3)).astype(np.float32)
    variables = from_torch(name, tmodel.state_dict(), input_size=(hw, hw, 3), **jax_kwargs)
    model = jaxvision.create_model(name, **jax_kwargs)
    out = jit_o0(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
    assert_logits_close(out, torch_logits(tmodel, x))


@pytest.mark.torch
def test_resnest50d_matches_timm():
    timm = pytest.importorskip("timm")
    _check("resnest50d", timm.create_model("resnest50d", pretrained=False))


@pytest.mark.torch
@pytest.mark.parametrize("radix,cardinality,base_width,avd_first", [
    (2, 2, 32, True), (1, 2, 32, True), (4, 2, 64, False)])
def test_tiny_resnest_matches_timm(radix, cardinality, base_width, avd_first):
    """Radix 1 (sigmoid gate), radix 4 with cardinality 2 (the 4s2x / 1s4x ablation
    layouts) and both avd placements, on a tiny timm ResNet of the same shape."""
    pytest.importorskip("timm")
    from timm.models.resnest import ResNestBottleneck
    from timm.models.resnet import ResNet

    kw = dict(radix=radix, cardinality=cardinality, base_width=base_width, avd_first=avd_first)
    tm = ResNet(block=ResNestBottleneck, layers=[1, 1, 1, 1], channels=(4, 4, 8, 8),
                stem_type="deep", stem_width=8, avg_down=True, base_width=base_width,
                cardinality=cardinality, num_classes=10,
                block_args=dict(radix=radix, avd=True, avd_first=avd_first))
    _check("test_resnest", tm, hw=48, **kw)


@pytest.mark.torch
def test_converter_reports_missing_and_unexpected_keys():
    pytest.importorskip("timm")
    from timm.models.resnest import ResNestBottleneck
    from timm.models.resnet import ResNet

    from jaxvision.convert import ConversionError, from_torch

    tm = ResNet(block=ResNestBottleneck, layers=[1, 1, 1, 1], channels=(4, 4, 8, 8),
                stem_type="deep", stem_width=8, avg_down=True, base_width=32, cardinality=2,
                num_classes=10, block_args=dict(radix=2, avd=True, avd_first=True))
    sd = dict(tm.state_dict())
    sd.pop("layer2.0.conv2.fc1.weight")
    sd["extra.weight"] = sd["fc.bias"]
    with pytest.raises(ConversionError, match="layer2.0.conv2.fc1.weight.*\n.*extra.weight"):
        from_torch("test_resnest", sd)
