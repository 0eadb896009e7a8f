"""create_model(name, pretrained=...): timm weights from a Hugging Face hub cache (offline),
from local files, converted once and then read from jaxvision's cache; bad input.

No network: timm models with random weights are written into a temporary hub cache laid out
as huggingface_hub lays out its own (blobs named by sha256, snapshots/<rev>/<file> links,
refs/main), with timm's own config.json; ``HF_HUB_OFFLINE=1`` is set.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxvision
from jaxvision import pretrained as pt

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from tests.hub_cache import add_to_hub, fast_timm, hub  # noqa: E402,F401  (hub: a fixture)
from tests.torch_ref import assert_logits_close, torch_logits  # noqa: E402


# Input sizes: vit_small_patch16_224 takes only 224 px; the others are tested smaller.
ACCEPTANCE = [("resnet50", 64), ("convnext_tiny", 64), ("vit_small_patch16_224", 224),
              ("vgg16_bn", 32)]


@pytest.mark.torch
@pytest.mark.parametrize("name,hw", ACCEPTANCE)
def test_pretrained_true_matches_timm_then_reads_the_cache(hub, name, hw, monkeypatch):
    tm = fast_timm(name)
    repo_id = json.load(open(pt._TAGS))["models"][name]["default"]
    weights = add_to_hub(hub / "hub", repo_id, tm)
    x = np.random.default_rng(0).standard_normal((1, hw, hw, 3)).astype(np.float32)
    ref = torch_logits(tm, x)

    model, variables = jaxvision.create_model(name, pretrained=True)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))  # compiled once, used twice
    assert_logits_close(apply(variables, x), ref)

    # The second call reads the converted variables: the converter is not run again.
    def fail(*a, **k):
        raise AssertionError("converted again instead of reading the cache")
    monkeypatch.setattr(pt, "convert_flat", fail)
    model2, again = jaxvision.create_model(name, pretrained=True)
    jax.tree.map(np.testing.assert_array_equal, again, variables)
    monkeypatch.undo()

    # The same file, given as a path, with an empty jaxvision cache: converted afresh.
    monkeypatch.setenv("JAXVISION_CACHE", str(hub / f"jv-{name}"))
    local = hub / f"{name}.safetensors"
    os.symlink(os.path.realpath(weights), local)
    model3, from_file = jaxvision.create_model(name, pretrained=str(local))
    assert model3 == model
    assert_logits_close(apply(from_file, x), ref)
    assert os.listdir(hub / f"jv-{name}" / "pretrained")


@pytest.fixture(scope="module")
def small(hub):
    """test_convnext (timm's tiny test model, with published weights) in the hub cache."""
    tm = fast_timm("test_convnext")
    add_to_hub(hub / "hub", "timm/test_convnext.r160_in1k", tm)
    return tm


@pytest.mark.torch
def test_new_head_and_no_head(small, caplog):
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    model, full = jaxvision.create_model("test_convnext", pretrained=True)
    assert_logits_close(jax.jit(model.apply)(full, x), torch_logits(small, x))
    with caplog.at_level("WARNING", logger="jaxvision"):
        model10, v10 = jaxvision.create_model("test_convnext", pretrained=True, num_classes=10)
    assert "replaced by a new one for 10 classes" in caplog.text
    assert jax.eval_shape(model10.apply, v10, x).shape == (2, 10)
    flat, flat10 = (jax.tree_util.tree_flatten_with_path(v)[0] for v in (full, v10))
    d = {jax.tree_util.keystr(k): v for k, v in flat}
    same = [jax.tree_util.keystr(k) for k, v in flat10
            if d[jax.tree_util.keystr(k)].shape == v.shape]
    changed = [jax.tree_util.keystr(k) for k, v in flat10 if k not in same
               and d[jax.tree_util.keystr(k)].shape != v.shape]
    assert len(changed) == 2 and len(same) == len(flat10) - 2  # head kernel and bias only
    for k, v in flat10:
        if jax.tree_util.keystr(k) in same:
            np.testing.assert_array_equal(v, d[jax.tree_util.keystr(k)])
    model0, v0 = jaxvision.create_model("test_convnext", pretrained=True, num_classes=0)
    feats = jax.eval_shape(model0.apply, v0, x)
    assert len(feats.shape) == 2 and feats.shape[1] != 1000
    assert not any("head_fc" in jax.tree_util.keystr(k)
                   for k, _ in jax.tree_util.tree_flatten_with_path(v0)[0])


@pytest.mark.torch
def test_model_cfg_and_list_models(small):
    cfg = jaxvision.model_cfg("test_convnext", pretrained=True)
    tcfg = small.pretrained_cfg
    assert cfg["input_size"] == (160, 160, 3)
    assert cfg["crop_pct"] == tcfg["crop_pct"] and cfg["interpolation"] == tcfg["interpolation"]
    assert cfg["mean"] == pytest.approx(tcfg["mean"])
    names = jaxvision.list_models(pretrained=True)
    assert {"resnet50", "vgg16_bn", "convnext_tiny", "vit_small_patch16_224"} <= set(names)
    assert "mnist_cnn" not in names and "resnet*" != names
    assert set(jaxvision.list_models("resnet5*", pretrained=True)) >= {"resnet50", "resnet50d"}


@pytest.mark.torch
def test_a_fresh_process_with_the_environment_alone(hub, small, tmp_path):
    """What a user runs: environment variables only, no patched constants."""
    code = ("import sys, numpy as np, jax, jaxvision\n"
            "m, v = jaxvision.create_model('test_convnext', pretrained=True)\n"
            "np.savez(sys.argv[1], *jax.tree.leaves(v))\n")
    env = dict(os.environ, HF_HUB_CACHE=str(hub / "hub"), HF_HUB_OFFLINE="1",
               JAXVISION_CACHE=str(tmp_path / "jv"), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.npz")], env=env, check=True,
                   timeout=300)
    _, here = jaxvision.create_model("test_convnext", pretrained=True)
    there = np.load(tmp_path / "v.npz")
    leaves = jax.tree.leaves(here)
    assert len(there.files) == len(leaves)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(there[f"arr_{i}"], leaf)


# ------------------------------------------------------------------------------------------
# Bad input: clear errors
# ------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_bad_input(hub, small, tmp_path):
    with pytest.raises(pt.PretrainedError, match="unknown pretrained tag 'timm/resnet50.nope'"):
        jaxvision.create_model("resnet50", pretrained="nope")
    with pytest.raises(pt.PretrainedError, match="holds weights of 'resnet18', not of"):
        jaxvision.create_model("resnet50", pretrained="timm/resnet18.a1_in1k")
    with pytest.raises(pt.PretrainedError, match="no pretrained weights are known"):
        jaxvision.create_model("mnist_cnn", pretrained=True)
    with pytest.raises(pt.PretrainedError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        jaxvision.create_model("test_nfnet", pretrained=True)  # a known tag, not downloaded
    with pytest.raises(pt.PretrainedError, match="does not exist"):
        jaxvision.create_model("resnet50", pretrained=str(tmp_path / "none.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(pt.PretrainedError, match="not a readable safetensors file"):
        jaxvision.create_model("test_convnext", pretrained=str(junk))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(pt.PretrainedError, match="does not hold a state dict"):
        jaxvision.create_model("test_convnext", pretrained=str(tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(pt.PretrainedError, match="is not a torch state dict"):
        jaxvision.create_model("test_convnext", pretrained=str(tmp_path / "text.pth"))
    # a state dict of another model
    other = tmp_path / "nfnet.pth"
    torch.save(timm.create_model("test_nfnet").state_dict(), other)
    with pytest.raises(pt.PretrainedError, match="state dict does not fit 'test_convnext'"):
        jaxvision.create_model("test_convnext", pretrained=str(other))
    # nothing half-written is left in the cache by the failures
    cache = os.path.join(os.environ["JAXVISION_CACHE"], "pretrained")
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]
