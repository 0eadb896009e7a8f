"""Residual Attention Network (Wang et al., 2017): attention residual learning, the mask
branch, parameter counts.

Golden counts (tests/golden/residual_attention.json): 31,810,728 for Attention-56 and
52,466,344 for Attention-92, equal to the parameter to the trainable parameters (convolutions,
the classifier, and the scale and shift of every BN layer) of the authors' released Caffe
deploy files, Attention-56-deploy.prototxt and Attention-92-deploy.prototxt, counted from
their layer definitions.  Against the paper's table: Attention-56 31.81M vs 31.9M (-0.3%);
Attention-92 52.47M vs 51.3M (+2.3%).  The released Attention-92 has the same per-module
units as Attention-56, so the printed figure is not reachable without removing units the
authors' own network has; the released network is the reference here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.models.residual_attention import (
    AttentionModule,
    attention_residual,
    interp_matrix,
    upsample_bilinear,
)
from jaxvision.utils import param_count


def test_attention_residual_learning_identity_at_zero_mask():
    f = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    np.testing.assert_array_equal(attention_residual(f, jnp.zeros_like(f)), f)
    np.testing.assert_allclose(attention_residual(f, jnp.ones_like(f)), 2 * f)


def _module_with_zero_mask_logits(x):
    """An attention module without pre/post units whose last mask conv is zeroed, so the
    mask is sigmoid(0) = 1/2 everywhere."""
    mod = AttentionModule(8, num_pools=2, p=0, t=2, r=1)
    v = mod.init(jax.random.key(1), x)
    v = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "mask_conv2" in jax.tree_util.keystr(path) else a, v)
    return mod, v


def test_module_output_is_one_plus_mask_times_trunk():
    x = jax.random.normal(jax.random.key(2), (2, 16, 16, 8))
    mod, v = _module_with_zero_mask_logits(x)
    out, inter = mod.apply(v, x, capture_intermediates=lambda m, _: m.name == "trunk1")
    trunk = inter["intermediates"]["trunk1"]["__call__"][0]
    np.testing.assert_allclose(out, 1.5 * trunk, rtol=1e-6, atol=1e-6)


def test_mask_depends_on_input_and_lies_in_unit_interval():
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 8))
    mod = AttentionModule(8, num_pools=2, p=0)
    v = mod.init(jax.random.key(4), x)
    out, inter = mod.apply(v, x, capture_intermediates=lambda m, _: m.name in
                           ("trunk1", "mask_conv2"))
    trunk = inter["intermediates"]["trunk1"]["__call__"][0]
    mask = jax.nn.sigmoid(inter["intermediates"]["mask_conv2"]["__call__"][0])
    assert mask.shape == trunk.shape
    assert float(mask.std()) > 1e-3  # mixed spatial / channel attention, not a constant
    np.testing.assert_allclose(out, (1 + mask) * trunk, rtol=1e-5, atol=1e-6)


def test_upsampling_is_bilinear_with_aligned_corners():
    m = interp_matrix(4, 7)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_allclose(m @ np.arange(4.0), np.arange(7) * 3 / 6)  # linear is exact
    x = jax.random.normal(jax.random.key(5), (1, 4, 5, 2))
    y = upsample_bilinear(x, (7, 9))
    np.testing.assert_allclose(y[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]],
                               rtol=1e-6)


@pytest.mark.torch
def test_upsampling_matches_torch_align_corners():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 7, 5, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                          size=(14, 11), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(upsample_bilinear(jnp.asarray(x), (14, 11)),
                               ref.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_attention56_count_near_paper():
    n = param_count(jaxvision.create_model("residual_attention_56"), (224, 224, 3))
    assert abs(n - 31.9e6) / 31.9e6 < 0.02, n


@pytest.mark.parametrize("name,released", [("residual_attention_56", 31_810_728),
                                           ("residual_attention_92", 52_466_344)])
def test_param_counts_equal_released_caffe_networks(name, released):
    """Counts of the authors' deploy prototxt files (conv + FC + BN scale/shift)."""
    assert param_count(jaxvision.create_model(name), (224, 224, 3)) == released


def test_stage_structure():
    m56 = jaxvision.create_model("residual_attention_56")
    m92 = jaxvision.create_model("residual_attention_92")
    assert tuple(m56.modules) == (1, 1, 1) and tuple(m92.modules) == (1, 2, 3)
    # Features of a 224px image: 2048 channels after the 7x7 stage.
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    f = m56.clone(num_classes=0)
    out, _ = jax.eval_shape(lambda x: f.init_with_output(jax.random.key(0), x), x)
    assert out.shape == (1, 2048)


def test_bad_config_is_reported():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="one entry per attention stage"):
        jaxvision.create_model("test_residual_attention", modules=(1, 1, 1)).init(
            jax.random.key(0), x)
    with pytest.raises(ValueError, match="stem"):
        jaxvision.create_model("test_residual_attention", stem="tiny").init(
            jax.random.key(0), x)
