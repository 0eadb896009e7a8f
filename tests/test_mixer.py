"""MLP-Mixer: parameter counts, equivalence with timm, token/channel mixing and input checks.

Golden counts (tests/golden/mixer.json) are timm 1.0.31's trainable parameter counts of
``timm.create_model(name)`` (re-checked below on the meta device); mixer_b16_224's
59,880,472 is also the reference target.  Equivalence runs every variant with timm and
jaxvision both built at a small ``img_size`` (the token-mixing MLP is then sized for that
patch count).
"""
import gc
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.utils import param_count

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "mixer.json")))
MIXERS = jaxvision.list_models("mixer_*")


def _init(module, x, seed=0):
    """Random variables without compiling the initialisers (shapes from jax.eval_shape)."""
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), shapes)


def test_reference_target_and_variants():
    assert param_count(jaxvision.create_model("mixer_b16_224"), (224, 224, 3)) == 59_880_472
    assert set(MIXERS) == {f"mixer_{s}{p}_224" for s in "sbl" for p in (16, 32)}
    assert set(GOLDEN) == set(MIXERS)


@pytest.mark.torch
def test_golden_counts_equal_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    for name, count in GOLDEN.items():
        with torch.device("meta"):
            tm = timm.create_model(name, pretrained=False, num_classes=1000)
        assert sum(p.numel() for p in tm.parameters() if p.requires_grad) == count, name


@pytest.mark.torch
@pytest.mark.parametrize("name", MIXERS)
def test_timm_equivalence(name):
    """Randomised timm weights -> from_torch -> eval logits within 1e-4 relative.  Applied op
    by op (no jit): compiling 24 unrolled blocks would dominate the test on CPU."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from tests.torch_ref import assert_logits_close, randomize_, torch_logits
    from jaxvision.convert import from_torch

    patch = jaxvision.create_model(name).patch_size
    img = 2 * patch  # a 2x2 patch grid
    batch = 1 if "_l" in name else 2
    with torch.device("meta"):  # skip timm's initialisers; every weight is drawn below
        tm = timm.create_model(name, pretrained=False, img_size=img, num_classes=1000)
    tm = tm.to_empty(device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tm.parameters():
            p.uniform_(-0.05, 0.05, generator=g)
    randomize_(tm, 0)
    x = np.random.default_rng(0).standard_normal((batch, img, img, 3)).astype(np.float32)
    variables = from_torch(name, tm.state_dict(), input_size=(img, img, 3), img_size=img)
    out = jaxvision.create_model(name, img_size=img).apply(variables, jnp.asarray(x))
    assert_logits_close(out, torch_logits(tm, x))
    del tm, variables
    gc.collect()


@pytest.mark.torch
@pytest.mark.parametrize("kwargs", [dict(), dict(num_classes=0), dict(stem_norm=True)])
def test_tiny_timm_equivalence(kwargs):
    """test_mixer against timm's MlpMixer class with the same arguments."""
    pytest.importorskip("timm")
    from timm.models.mlp_mixer import MlpMixer
    from tests.torch_ref import check_equivalence

    tm = MlpMixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=32,
                  **dict(dict(num_classes=10), **kwargs))
    check_equivalence("test_mixer", tm, input_hw=(32, 32), batch=2, **kwargs)


def test_token_mixing_mixes_patches_and_channel_mixing_does_not():
    """One block: changing one patch moves other patches' outputs only through the token MLP."""
    from jaxvision.models.mlp_mixer import MixerBlock

    block = MixerBlock()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6, 8)), jnp.float32)
    variables = _init(block, x)
    apply = jax.jit(block.apply)
    # Not a constant shift: LayerNorm over channels would remove it.
    x1 = x.at[:, 0].add(jnp.linspace(-1.0, 1.0, 8))
    y0 = np.asarray(apply(variables, x))
    y1 = np.asarray(apply(variables, x1))
    assert np.abs(y1[:, 1:] - y0[:, 1:]).max() > 1e-4  # information crossed patches

    params = dict(variables["params"])
    params["mlp_tokens"] = jax.tree.map(jnp.zeros_like, params["mlp_tokens"])
    no_token_mix = {"params": params}
    z0 = np.asarray(apply(no_token_mix, x))
    z1 = np.asarray(apply(no_token_mix, x1))
    np.testing.assert_allclose(z1[:, 1:], z0[:, 1:], atol=1e-6)  # channel MLP is per patch
    # The hidden widths are timm's (0.5 C for tokens, 4 C for channels).
    assert params["mlp_tokens"]["fc1"]["kernel"].shape == (6, 4)
    assert params["mlp_channels"]["fc1"]["kernel"].shape == (8, 32)


def test_features_training_and_errors():
    model = jaxvision.create_model("test_mixer", drop_path_rate=0.3, proj_drop_rate=0.1,
                                   drop_rate=0.1)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 3)), jnp.float32)
    variables = _init(model, x)
    apply = jax.jit(model.apply, static_argnames="train")
    key = lambda s: jax.random.key(s, impl="unsafe_rbg")  # noqa: E731  (cheap to compile)
    e = apply(variables, x)
    assert e.shape == (4, 10)
    t1 = apply(variables, x, train=True, rngs={"dropout": key(1)})
    t2 = apply(variables, x, train=True, rngs={"dropout": key(2)})
    assert not np.allclose(np.asarray(t1), np.asarray(t2))
    np.testing.assert_array_equal(np.asarray(apply(variables, x)), np.asarray(e))

    feats = jaxvision.create_model("test_mixer", num_classes=0)
    fv = _init(feats, x)
    assert jax.jit(feats.apply)(fv, x).shape == (4, 32)
    tokens = jaxvision.create_model("test_mixer", num_classes=0, global_pool="")
    assert jax.jit(tokens.apply)(fv, x).shape == (4, 16, 32)

    with pytest.raises(ValueError, match="img_size"):
        model.apply(variables, jnp.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="global_pool"):
        _init(jaxvision.create_model("test_mixer", global_pool="token"), x)
