"""Inception family: Inception-v3/v4, Inception-ResNet-v1/v2 (timm equivalence where timm has
the model), BN-Inception.

Golden parameter counts (tests/golden/inception.json) come from
``jaxvision.utils.param_count``; their sources:
  * timm 1.0.31 (``sum(p.numel() for p in m.parameters())``): inception_v3 23,834,568
    (timm's default aux_logits=False), inception_v4 42,679,816, inception_resnet_v2 55,843,464.
  * the papers' architectures (no reference implementation): inception_resnet_v1 (Szegedy et
    al., 2017, Figures 10-14), bn_inception (Ioffe & Szegedy, 2015, appendix table).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.convert.inception import flax_path
from jaxvision.utils import param_shapes


def _intermediate_shapes(name, hw, **kw):
    model = jaxvision.create_model(name, **kw)
    _, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, capture_intermediates=True),
        jax.ShapeDtypeStruct((1, *hw), jnp.float32))
    return {k: v["__call__"][0].shape for k, v in variables["intermediates"].items()
            if "__call__" in v}


def test_flax_path_rule():
    assert flax_path("features.4.branch1.2.conv") == "features_4/branch1_2/conv"
    assert flax_path("repeat_1.3.branch0.conv") == "repeat_1_3/branch0/conv"
    assert flax_path("Mixed_5b.branch5x5_1.bn") == "Mixed_5b/branch5x5_1/bn"


def test_bn_inception_follows_the_table():
    shapes = _intermediate_shapes("bn_inception", (224, 224, 3))
    # Branch widths define the outputs: 3a 256, 3b 320, 3c 576 (stride 2), 4a-4b 576,
    # 4c-4d 608, 4e 1056 (stride 2), 5a-5b 1024.
    expected = {"3a": (28, 256), "3b": (28, 320), "3c": (14, 576), "4a": (14, 576),
                "4b": (14, 576), "4c": (14, 608), "4d": (14, 608), "4e": (7, 1056),
                "5a": (7, 1024), "5b": (7, 1024)}
    for m, (hw, c) in expected.items():
        assert shapes[f"inception{m}"] == (1, hw, hw, c), m
    p = param_shapes(jaxvision.create_model("bn_inception"), (224, 224, 3))
    # The 5x5 convolutions are gone: every spatial kernel is 3x3 except the 7x7 stem.
    kernels = {x.shape[:2] for x in jax.tree.leaves(p) if x.ndim == 4}
    assert kernels == {(1, 1), (3, 3), (7, 7)}
    # BN after every convolution, no conv bias.
    for k, v in p.items():
        if k.startswith("inception"):
            assert all("bn" in sub and "bias" not in sub["conv"] for sub in v.values())


def test_inception_resnet_v1_grid_sizes():
    shapes = _intermediate_shapes("inception_resnet_v1", (299, 299, 3))
    assert shapes["conv2d_4b"] == (1, 35, 35, 256)
    assert shapes["repeat_4"] == (1, 35, 35, 256)
    assert shapes["mixed_6a"] == (1, 17, 17, 896)
    assert shapes["repeat_1_9"] == (1, 17, 17, 896)
    assert shapes["mixed_7a"] == (1, 8, 8, 1792)
    assert shapes["block8"] == (1, 8, 8, 1792)


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_too_small_input_is_rejected(name):
    model = jaxvision.create_model(name)
    with pytest.raises(ValueError, match="at least 75x75"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                       jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def test_inception_v3_aux_head_sows_a_loss_only_with_targets_in_training():
    # Traced with eval_shape: the wiring is checked without compiling the network.
    model = jaxvision.create_model("test_inception_v3", aux_logits=True)
    x = jax.ShapeDtypeStruct((2, 75, 75, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((2, 10), jnp.float32)

    def run(x, t, train, with_targets):
        v = model.init(jax.random.key(0), x)
        return v, model.apply(v, x, train=train, targets=t if with_targets else None,
                              mutable=["batch_stats", "losses"])

    v, (logits, state) = jax.eval_shape(lambda x, t: run(x, t, True, True), x, t)
    assert "AuxLogits" in v["params"] and logits.shape == (2, 10)
    assert [a.shape for a in state["losses"]["aux_loss"]] == [()]
    for train, with_targets in ((True, False), (False, True)):
        _, (_, state) = jax.eval_shape(lambda x, t: run(x, t, train, with_targets), x, t)
        assert not state.get("losses")
    assert "AuxLogits" not in jax.eval_shape(
        lambda x: jaxvision.create_model("test_inception_v3").init(jax.random.key(0), x),
        x)["params"]


# ----------------------------------------------------------------------------------------
# Equivalence with timm (75x75, the smallest input all three accept; batch 1)
# ----------------------------------------------------------------------------------------

def fast_torch(factory):
    """A torch model built on the meta device, weights filled with He-normal noise (skips the
    slow reference initialisation); ``check_equivalence`` randomises norms and biases."""
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        m = factory()
    m = m.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.normal_(0, (2.0 / p[0].numel()) ** 0.5, generator=g)
            else:
                p.zero_()
        for b in m.buffers():
            b.zero_()
    return m


@pytest.mark.torch
@pytest.mark.parametrize("name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_matches_timm(name):
    timm = pytest.importorskip("timm")
    from tests.torch_ref import check_equivalence
    check_equivalence(name, fast_torch(lambda: timm.create_model(name)), input_hw=(75, 75),
                      batch=1)


@pytest.mark.torch
def test_inception_v3_converts_timm_aux_head():
    timm = pytest.importorskip("timm")
    from jaxvision.convert import ConversionError, from_torch
    sd = fast_torch(lambda: timm.create_model("inception_v3", aux_logits=True)).state_dict()
    v = from_torch("inception_v3", sd, input_size=(75, 75, 3), aux_logits=True)
    np.testing.assert_array_equal(v["params"]["AuxLogits"]["fc"]["kernel"],
                                  sd["AuxLogits.fc.weight"].numpy().T)
    with pytest.raises(ConversionError, match="the model does not have.*AuxLogits"):
        from_torch("inception_v3", sd, input_size=(75, 75, 3))
