"""ResNet family: torch equivalence, parameter counts, attention and drop-path layers.

Sources of the parameter counts:
* timm 1.0.31 / torchvision (exact): checked against the torch model itself in
  ``test_param_count_matches_timm`` and stored in ``tests/golden/resnet.json``.
* Papers (rounded figures, checked to their printed precision or within 2%):
  He et al. 2016 (CIFAR ResNets, Table 6), He et al. 2016 "Identity Mappings" (pre-act
  ResNet-164/1001), Zagoruyko & Komodakis 2016 (WRN, Tables 1 and 5), Woo et al. 2018
  (CBAM, Table 4).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.layers.attention import CBAM, SqueezeExcite
from jaxvision.layers.drop import DropPath, drop_path, linear_drop_path_rates
from jaxvision.layers.helpers import make_divisible
from jaxvision.layers.pooling import avg_pool
from jaxvision.models.resnet import BasicBlock, ResNet
from jaxvision.models.wide_resnet import WideResNet
from jaxvision.utils import param_count


def _torch_ref():
    pytest.importorskip("torch")
    from tests import torch_ref
    return torch_ref


def _count(name, **kw):
    return param_count(jaxvision.create_model(name, **kw), jaxvision.model_cfg(name)["input_size"])


# ---------------------------------------------------------------------------------------
# Torch equivalence (timm / torchvision, randomised weights, eval-mode logits, 64x64).
# ---------------------------------------------------------------------------------------
EQUIVALENCE = ["resnet18", "resnet50", "resnet50d", "resnet152", "wide_resnet50_2",
               "resnext50_32x4d", "seresnet50", "senet154", "resnetv2_50", "resnetv2_50d",
               "resnetv2_18"]


@pytest.mark.torch
@pytest.mark.parametrize("name", EQUIVALENCE)
def test_equivalence_with_timm(name):
    torch_ref = _torch_ref()
    timm = pytest.importorskip("timm")
    tmodel = timm.create_model(name, pretrained=False)
    torch_ref.check_equivalence(name, tmodel, input_hw=(64, 64), batch=2 if
                                name not in ("senet154", "resnet152") else 1)


@pytest.mark.torch
def test_equivalence_with_torchvision_resnet18():
    torch_ref = _torch_ref()
    tv = pytest.importorskip("torchvision")
    torch_ref.check_equivalence("resnet18", tv.models.resnet18(weights=None), input_hw=(64, 64))


@pytest.mark.torch
def test_equivalence_odd_input_size_avg_down():
    """ResNet-D's ceil-mode average pool on odd feature maps (69 px -> 18, 9, 5, 3)."""
    torch_ref = _torch_ref()
    timm = pytest.importorskip("timm")
    torch_ref.check_equivalence("resnet18d", timm.create_model("resnet18d"), input_hw=(69, 69),
                                batch=1)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["resnet34d", "resnext101_64x4d", "seresnext101_32x8d",
                                  "resnetv2_101"])
def test_param_count_matches_timm(name):
    """Models outside the equivalence tests (there ``from_torch`` already checks every shape)."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # shapes only, nothing allocated
        tmodel = timm.create_model(name, pretrained=False)
    assert _count(name) == sum(p.numel() for p in tmodel.parameters())


@pytest.mark.torch
def test_from_torch_rejects_mismatched_state_dict():
    timm = pytest.importorskip("timm")
    from jaxvision.convert import ConversionError, from_torch
    sd = timm.create_model("resnet18").state_dict()
    with pytest.raises(ConversionError, match=r"missing torch keys \(80\): layer1\.2\.conv1"):
        from_torch("resnet34", sd)


def ceil_avg_pool(x):
    return avg_pool(x, 2, 2, ceil_mode=True, count_include_pad=False)


@pytest.mark.torch
@pytest.mark.parametrize("hw", [(7, 9), (8, 8), (1, 3)])
def test_avg_pool_ceil_matches_torch(hw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, *hw, 3)).astype(np.float32)
    ref = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(
        torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(ceil_avg_pool(jnp.asarray(x))), ref, rtol=1e-6,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------
# Paper parameter counts.
# ---------------------------------------------------------------------------------------
# name -> (figure in millions, decimals printed in the paper)
PAPER_COUNTS = {
    "resnet20_cifar": (0.27, 2), "resnet32_cifar": (0.46, 2), "resnet44_cifar": (0.66, 2),
    "resnet56_cifar": (0.85, 2), "resnet110_cifar": (1.7, 1), "resnet1202_cifar": (19.4, 1),
    "preact_resnet164_cifar": (1.7, 1), "preact_resnet1001_cifar": (10.2, 1),
    "wrn40_4": (8.9, 1), "wrn16_8": (11.0, 1), "wrn28_10": (36.5, 1),
    "wrn28_10_dropout": (36.5, 1), "wrn40_1": (0.6, 1), "wrn52_1": (0.8, 1),
    "cbam_resnet18": (11.78, 2), "cbam_resnet34": (21.96, 2), "cbam_resnet50": (28.09, 2),
    "cbam_resnet101": (49.33, 2),
}


with open(os.path.join(os.path.dirname(__file__), "golden", "resnet.json")) as _f:
    # test_models.py holds every registered model's count equal to these
    GOLDEN = json.load(_f)


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_param_count_matches_paper(name):
    """The golden count (the code's count: test_models.test_golden_param_count) against the
    paper's printed figure; tracing the 600-block networks again here took 40 s."""
    figure, decimals = PAPER_COUNTS[name]
    count = GOLDEN[name] / 1e6
    # Within 2%, or within the paper's rounding for coarse figures (WRN-40-1: 0.56M -> 0.6M).
    tol = max(0.02 * figure, 0.5 * 10 ** -decimals)
    assert abs(count - figure) <= tol, (name, count, figure)
    if name != "preact_resnet1001_cifar":  # the paper prints 10.33M as 10.2M
        assert round(count, decimals) == pytest.approx(figure), (name, count, figure)


# Table 1 of the WRN paper: k = 2, each block type at the depth the paper used.
@pytest.mark.parametrize("block_type,depth,figure", [
    ((1, 3, 1), 40, 1.4), ((3, 1), 40, 1.2), ((1, 3), 40, 1.3), ((3, 1, 1), 40, 1.3),
    ((3, 3), 28, 1.5), ((3, 1, 3), 22, 1.1)])
def test_wrn_block_types_match_table1(block_type, depth, figure):
    m = WideResNet(depth=depth, widen_factor=2, block_type=block_type)
    assert round(param_count(m, (32, 32, 3)) / 1e6, 1) == pytest.approx(figure)


def test_wrn_dropout_only_in_training():
    m = jaxvision.create_model("test_wrn", dropout_rate=0.5)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
    v = m.init(jax.random.key(0), x)
    ev = m.apply(v, x)
    np.testing.assert_array_equal(ev, m.apply(v, x))
    tr = [m.apply(v, x, train=True, rngs={"dropout": jax.random.key(i)},
                  mutable=["batch_stats"])[0] for i in (1, 2)]
    assert not np.allclose(tr[0], tr[1])


@pytest.mark.torch
@pytest.mark.parametrize("name", ["test_wrn", "test_wrn_b313"])
def test_wrn_equivalence_with_its_torch_version(name):
    """The PyTorch WRN (``jaxvision.reference_torch``, used by the benchmark's
    ``--compare torch``) computes the same function as the Flax one."""
    torch_ref = _torch_ref()
    from jaxvision.reference_torch import create_torch_model
    torch_ref.check_equivalence(name, create_torch_model(name), input_hw=(32, 32))


@pytest.mark.torch
def test_wrn28_10_torch_version_has_the_same_parameters():
    torch = pytest.importorskip("torch")
    from jaxvision.reference_torch import create_torch_model
    with torch.device("meta"):
        tmodel = create_torch_model("wrn28_10")
    assert sum(p.numel() for p in tmodel.parameters()) == _count("wrn28_10")
    with pytest.raises(ValueError, match="no PyTorch version"):
        create_torch_model("resnet18")


def test_bad_configurations_raise_clear_errors():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=27).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="odd"):
        WideResNet(depth=10, block_type=(3, 2)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="attn"):
        jaxvision.create_model("test_resnet", attn="eca").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="stem_type"):
        jaxvision.create_model("test_resnet", stem_type="deeep").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="same length"):
        jaxvision.create_model("test_resnet", channels=(8,)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="NHWC"):
        jaxvision.create_model("test_resnet").init(jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="6n\\+2"):
        jaxvision.models.resnet._cifar_resnet(21, {})


@pytest.mark.parametrize("name", ["test_resnet_bottleneck", "test_resnetv2", "test_wrn",
                                  "test_cbam_resnet"])
def test_num_classes_zero_returns_features(name):
    m = jaxvision.create_model(name, num_classes=0)
    x = jnp.ones((2, 32, 32, 3))
    out, _ = m.init_with_output(jax.random.key(0), x)
    assert out.ndim == 2 and out.shape[0] == 2 and out.shape[1] > 10


# ---------------------------------------------------------------------------------------
# Layers: option-A shortcut, SE, CBAM, drop path.
# ---------------------------------------------------------------------------------------
def test_option_a_shortcut_is_subsample_and_zero_pad():
    """With the residual branch silenced (last BN scale and bias 0) a downsampling block of
    the CIFAR ResNet returns relu(zero-padded, subsampled input) and owns no shortcut params."""
    block = BasicBlock(planes=8, stride=2, downsample="A")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 4)), jnp.float32)
    v = block.init(jax.random.key(0), x)
    assert not any("downsample" in k for k in v["params"])
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if "bn2" in jax.tree_util.keystr(p) and
        p[-1].key in ("scale", "bias") else a, v)
    expected = np.pad(np.asarray(x)[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
    np.testing.assert_allclose(block.apply(v, x), np.maximum(expected, 0), atol=1e-6)


def _np_conv_same(x, w):
    """'Same' cross-correlation of NHWC ``x`` with HWIO ``w`` (odd kernel), by shifted sums."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, wd = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (w.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + wd, :], w[i, j])
    return out


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_cbam_matches_paper_formulas():
    """F' = sigmoid(MLP(avg F) + MLP(max F)) * F, F'' = sigmoid(BN(f7x7([avg_c F'; max_c F'])))
    * F' (Woo et al., 2018, Eqs. 1-3; BN after the bias-free 7x7 conv as in the reference
    code), with every parameter and statistic randomised."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 7, 32)).astype(np.float32)
    mod = CBAM(rd_ratio=1 / 16)
    v = mod.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.5
                                           + (1.0 if a.ndim == 1 and a.shape == (1,) else 0.0),
                                           jnp.float32), v)
    v["batch_stats"]["spatial"]["bn"]["var"] = jnp.asarray([1.3], jnp.float32)
    p, bs = v["params"], v["batch_stats"]
    w0, b0 = np.asarray(p["channel"]["fc1"]["kernel"]), np.asarray(p["channel"]["fc1"]["bias"])
    w1, b1 = np.asarray(p["channel"]["fc2"]["kernel"]), np.asarray(p["channel"]["fc2"]["bias"])
    assert w0.shape == (32, 2)  # C/r hidden units, r = 16

    mlp = lambda f: np.maximum(f @ w0 + b0, 0) @ w1 + b1
    mc = _sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))
    f1 = x * mc[:, None, None, :]
    pooled = np.concatenate([f1.mean(-1, keepdims=True), f1.max(-1, keepdims=True)], -1)
    s = _np_conv_same(pooled, np.asarray(p["spatial"]["conv"]["kernel"]))
    bn_p, bn_s = p["spatial"]["bn"], bs["spatial"]["bn"]
    s = ((s - np.asarray(bn_s["mean"])) / np.sqrt(np.asarray(bn_s["var"]) + 1e-5)
         * np.asarray(bn_p["scale"]) + np.asarray(bn_p["bias"]))
    expected = f1 * _sigmoid(s)
    np.testing.assert_allclose(np.asarray(mod.apply(v, x)), expected, rtol=1e-4, atol=1e-5)
    assert "bias" not in p["spatial"]["conv"]


def test_squeeze_excite_matches_formula_and_timm_widths():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 5, 64)).astype(np.float32)
    mod = SqueezeExcite()
    v = mod.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) * 0.3, jnp.float32), v)
    p = v["params"]
    # timm rounds 64/16 = 4 up to the divisor 8.
    assert p["fc1"]["kernel"].shape == (1, 1, 64, 8)
    h = np.maximum(x.mean((1, 2)) @ np.asarray(p["fc1"]["kernel"])[0, 0] + np.asarray(
        p["fc1"]["bias"]), 0)
    g = _sigmoid(h @ np.asarray(p["fc2"]["kernel"])[0, 0] + np.asarray(p["fc2"]["bias"]))
    np.testing.assert_allclose(mod.apply(v, x), x * g[:, None, None, :], rtol=1e-5, atol=1e-6)
    widths = {rd: SqueezeExcite(rd_channels=rd).init(jax.random.key(0), x)["params"]["fc1"]
              ["kernel"].shape[-1] for rd in (3, 20)}
    assert widths == {3: 3, 20: 20}
    assert make_divisible(4, 8) == 8 and make_divisible(37, 8) == 40 and make_divisible(9, 8) == 16


def test_squeeze_excite_options():
    x = jnp.ones((1, 4, 4, 32))
    p = SqueezeExcite(rd_ratio=0.25, rd_divisor=1, use_bias=False).init(
        jax.random.key(0), x)["params"]
    assert set(p["fc1"]) == {"kernel"} and p["fc1"]["kernel"].shape == (1, 1, 32, 8)
    v = SqueezeExcite(use_norm=True, gate_fn=jax.nn.hard_sigmoid).init(jax.random.key(0), x)
    assert "bn" in v["params"] and "bn" in v["batch_stats"]


def test_drop_path_per_sample_and_unbiased():
    x = jnp.ones((4000, 3, 2, 2))
    y = np.asarray(drop_path(x, 0.25, jax.random.key(0), deterministic=False))
    per_sample = y.reshape(4000, -1)
    # Each sample is either dropped whole or kept whole and scaled by 1 / keep.
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.75).all(1))
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(drop_path(x, 0.25, None, deterministic=True), x)
    np.testing.assert_array_equal(drop_path(x, 1.0, None, deterministic=False), 0 * x)
    with pytest.raises(ValueError, match="rate"):
        drop_path(x, 1.5, jax.random.key(0), deterministic=False)


def test_drop_path_module_uses_dropout_stream():
    x = jnp.ones((64, 4))
    m = DropPath(0.5)
    assert m.apply({}, x, deterministic=True) is x
    a = m.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    b = m.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.array_equal(a, b)
    assert set(np.unique(np.asarray(a))) <= {0.0, 2.0}
    assert linear_drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_resnet_drop_path_active_only_in_training():
    m = jaxvision.create_model("test_resnet_bottleneck", drop_path_rate=0.5, drop_rate=0.0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 32, 32, 3)), jnp.float32)
    v = m.init(jax.random.key(0), x)
    np.testing.assert_array_equal(m.apply(v, x), m.apply(v, x))
    outs = [m.apply(v, x, train=True, rngs={"dropout": jax.random.key(i)},
                    mutable=["batch_stats"])[0] for i in (1, 2)]
    assert not np.allclose(outs[0], outs[1])


def test_zero_init_last_makes_blocks_identity():
    m = ResNet(stage_sizes=(1, 1), channels=(8, 8), stem_width=8, num_classes=0,
               zero_init_last=True)
    v = m.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))
    assert not np.any(np.asarray(v["params"]["layer1_0"]["bn2"]["scale"]))
    assert np.all(np.asarray(v["params"]["layer1_0"]["bn1"]["scale"]) == 1)
