"""DenseNet (Huang et al., 2017): parameter counts, structure and equivalence with timm.

Golden counts (tests/golden/densenet.json): the ImageNet models are timm 1.0.31's parameter
counts of ``timm.create_model(name)`` (checked against timm below; reference targets
densenet121 = 7,978,856 and densenet264d = 72,736,216 asserted explicitly).  The CIFAR
DenseNet-BC models have no timm counterpart; their counts are checked against the paper's
Table 2 (0.8M, 15.3M, 25.6M).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.utils import param_count, param_shapes

with open(os.path.join(os.path.dirname(__file__), "golden", "densenet.json")) as _f:
    GOLDEN = json.load(_f)
IMAGENET = ["densenet121", "densenet169", "densenet201", "densenet161", "densenet264d"]


def _count(name, **kw):
    return param_count(jaxvision.create_model(name, **kw), jaxvision.model_cfg(name)["input_size"])


def test_reference_targets():
    assert _count("densenet121") == 7_978_856
    assert _count("densenet264d") == 72_736_216
    assert set(GOLDEN) == set(jaxvision.list_models("densenet*"))


@pytest.mark.parametrize("name,paper", [("densenet_bc250_k24_cifar", 15.3e6),
                                        ("densenet_bc190_k40_cifar", 25.6e6)])
def test_cifar_counts_match_paper_table(name, paper):
    assert abs(_count(name) - paper) / paper < 0.02


def test_cifar_bc100_count_matches_paper_table():
    """The paper lists 0.8M (one decimal) for both CIFAR-10 and CIFAR-100.  With the
    10-class head the model has 0.77M (rounds to 0.8M); with the 100-class head 0.80M."""
    n10 = _count("densenet_bc100_k12_cifar")
    assert round(n10 / 1e6, 1) == 0.8
    n100 = _count("densenet_bc100_k12_cifar", num_classes=100)
    assert abs(n100 - 0.8e6) / 0.8e6 < 0.02


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    for name in IMAGENET:
        with torch.device("meta"):
            tm = timm.create_model(name, pretrained=False)
        assert sum(p.numel() for p in tm.parameters()) == GOLDEN[name], name


def test_dense_connectivity_and_compression():
    """Each layer of a block sees all earlier maps: input width grows by k per layer; the
    transition halves the channels (compression 0.5)."""
    model = jaxvision.create_model("densenet_bc100_k12_cifar")
    shapes = param_shapes(model, (32, 32, 3))
    k, n = 12, 16
    for j in range(n):
        w = shapes[f"denseblock1_denselayer{j + 1}"]["conv1"]["kernel"]
        assert w.shape == (1, 1, 2 * k + j * k, 4 * k)
        assert shapes[f"denseblock1_denselayer{j + 1}"]["conv2"]["kernel"].shape == (3, 3, 4 * k, k)
    m = 2 * k + n * k
    assert shapes["transition1_conv"]["kernel"].shape == (1, 1, m, m // 2)
    assert shapes["classifier"]["kernel"].shape[0] == (m // 2 + n * k) // 2 + n * k


def test_new_features_are_appended_unchanged():
    """The block output starts with the block input (concatenation, not summation)."""
    model = jaxvision.create_model("test_densenet", num_classes=0)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = model.init(jax.random.key(1), x)
    _, inter = model.apply(v, x, capture_intermediates=lambda m, _: m.name == "conv0"
                           or m.name == "transition1_norm")
    stem = inter["intermediates"]["conv0"]["__call__"][0]
    # transition1's BatchNorm sees the block output; at init (eval mode: mean 0, var 1,
    # scale 1, bias 0) it only divides by sqrt(1 + eps).  Channels [0:8) are the stem maps.
    block_out = inter["intermediates"]["transition1_norm"]["__call__"][0] * np.sqrt(1 + 1e-5)
    assert block_out.shape[-1] == 8 + 2 * 4
    np.testing.assert_allclose(np.asarray(block_out)[..., :8], np.asarray(stem), rtol=1e-5,
                               atol=1e-6)


def test_bad_arguments_are_reported():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="stem_type"):
        jaxvision.create_model("test_densenet", stem_type="wide").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="depth"):
        jaxvision.models.densenet.densenet_bc_cifar(101, 12)


# ---------------------------------------------------------------------------------------------
# Equivalence with timm


def _check(name, tmodel, hw=64, batch=2):
    """from_torch on randomised weights; eval logits within 1e-4 relative of torch's.
    Jitted: op-by-op execution compiles every distinct op shape and costs more CPU."""
    from jaxvision.convert import from_torch
    from tests.torch_ref import assert_logits_close, randomize_, torch_logits

    randomize_(tmodel, 0)
    x = np.random.default_rng(0).standard_normal((batch, hw, hw, 3)).astype(np.float32)
    variables = from_torch(name, tmodel.state_dict(), input_size=(hw, hw, 3))
    model = jaxvision.create_model(name)
    from tests.quick_compile import jit_o0
    out = jit_o0(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
    assert_logits_close(out, torch_logits(tmodel, x))


@pytest.mark.torch
@pytest.mark.parametrize("name", ["densenet121", "densenet264d"])
def test_matches_timm(name):
    timm = pytest.importorskip("timm")
    _check(name, timm.create_model(name, pretrained=False), hw=32, batch=2)


@pytest.mark.torch
def test_torchvision_densenet121_converts():
    """torchvision's densenet121 state dict has exactly timm's keys (its ReLUs and pools
    hold no tensors), so the same converter loads it."""
    tv = pytest.importorskip("torchvision")
    tm = tv.models.densenet121(weights=None)
    _check("densenet121", tm, hw=32, batch=1)
