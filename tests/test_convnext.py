"""ConvNeXt: timm equivalence, layer scale / head options, stochastic depth.

Golden parameter counts (tests/golden/convnext.json) are timm 1.0.31's trainable-parameter
counts, ``sum(p.numel() for p in m.parameters())``; ``test_golden_counts_equal_timm``
re-derives them from timm (convnext_tiny 28,589,128 and convnext_large 197,767,336 also
match the reference table).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.utils import param_count
from tests.quick_compile import jit_o0

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "convnext.json")


def _key(seed=0):
    # The 'rbg' key compiles much faster than threefry on CPU; init values are still random.
    return jax.random.key(seed, impl="rbg")


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture
def lax_convolutions(monkeypatch):
    """Model options, not convolution kernels, are under test: XLA's own convolutions, which
    compile several times faster than the CPU plan's depthwise forms (those are checked
    against lax in test_conv.py and against timm below)."""
    monkeypatch.setenv("JAXVISION_CONV_IMPL", "lax")


def test_layer_scale_and_head_init_options(lax_convolutions):
    x = _x((2, 32, 32, 3))
    model = jaxvision.create_model("test_convnext", head_init_scale=0.001)
    v = jit_o0(model.init)(_key(), x)["params"]
    assert np.all(np.asarray(v["stages_2_blocks_3"]["gamma"]) == np.float32(1e-6))
    ref = jit_o0(jaxvision.create_model("test_convnext").init)(_key(), x)["params"]
    np.testing.assert_allclose(np.asarray(v["head_fc"]["kernel"]),
                               0.001 * np.asarray(ref["head_fc"]["kernel"]), rtol=1e-6)
    assert np.std(np.asarray(ref["head_fc"]["kernel"])) == pytest.approx(0.02, rel=0.1)

    no_ls = jaxvision.create_model("test_convnext", ls_init_value=None)
    shapes = jax.eval_shape(no_ls.init, _key(), x)["params"]
    assert "gamma" not in shapes["stages_0_blocks_0"]
    with_ls, without = param_count(model, (32, 32, 3)), param_count(no_ls, (32, 32, 3))
    assert with_ls - without == sum(d * c for d, c in zip(model.depths, model.dims))


def test_drop_path_features_and_bad_input(lax_convolutions):
    x = _x((8, 32, 32, 3))
    model = jaxvision.create_model("test_convnext", drop_path_rate=0.5, ls_init_value=1.0)
    v = jit_o0(model.init)(_key(), x)
    plain = jaxvision.create_model("test_convnext", ls_init_value=1.0)
    np.testing.assert_array_equal(np.asarray(jit_o0(model.apply)(v, x)),
                                  np.asarray(jit_o0(plain.apply)(v, x)))
    train = jit_o0(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, b = train(v, x, _key(1)), train(v, x, _key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))

    feats = jax.eval_shape(lambda: jaxvision.create_model("test_convnext", num_classes=0)
                           .init_with_output(_key(), x)[0])
    assert feats.shape == (8, 64)
    with pytest.raises(ValueError, match="rank 4"):
        model.init(_key(), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="kernel_sizes"):
        jax.eval_shape(jaxvision.create_model("test_convnext", kernel_sizes=(7, 5)).init,
                       _key(), x)


# -- torch (timm) reference ----------------------------------------------------------------

def _timm_random(name, seed=0):
    """A timm model with random weights, built without timm's (slow) truncated-normal
    initialisers: fan-in scaled normal kernels; 1-D parameters (LayerNorm affine, biases,
    layer scales) are randomised by torch_ref.randomize_ (layer scales near 1, so every
    block's branch matters)."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model(name)
    m = m.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in m.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.zero_()
    return m


@pytest.mark.torch
@pytest.mark.parametrize("name,batch", [
    ("test_convnext", 2),  # tanh GELU, LayerNorm eps 1e-5
    ("convnext_tiny", 1),
    ("convnext_large", 1),
])
def test_equivalence_with_timm(name, batch):
    from tests.torch_ref import check_equivalence
    check_equivalence(name, _timm_random(name), input_hw=(32, 32), batch=batch)


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from tests.torch_ref import trainable_count
    with open(GOLDEN) as f:
        golden = json.load(f)
    family = {n for n in jaxvision.list_models(exclude="test_*")
              if jaxvision.registry.model_family(n) == "convnext"}
    assert set(golden) == family
    for name, count in {**golden, "test_convnext": None}.items():
        with torch.device("meta"):
            ref = trainable_count(timm.create_model(name))
        if count is None:
            count = param_count(jaxvision.create_model(name), jaxvision.model_cfg(name)["input_size"])
        assert count == ref, name
