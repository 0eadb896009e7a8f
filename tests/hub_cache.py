"""A temporary, offline Hugging Face hub cache holding timm models with random weights.

Laid out as huggingface_hub lays out its own cache (blobs named by sha256,
``snapshots/<rev>/<file>`` links, ``refs/main``), with timm's own ``config.json``.
"""
import hashlib
import os

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from tests.torch_ref import randomize_  # noqa: E402

REV = "0123456789abcdef0123456789abcdef01234567"


def fast_timm(name, **kw):
    """A timm model built on the meta device and filled with noise (timm's own init of
    vgg16_bn's 138M parameters takes seconds); norms/biases/statistics randomised too."""
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, **kw)
    m = m.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1:
                p.normal_(0, (1.0 / p[0].numel()) ** 0.5, generator=g)
    return randomize_(m)


def add_to_hub(root, repo_id, tmodel):
    """Write ``tmodel``'s weights and timm's config.json for it as hub repo ``repo_id``."""
    from timm.models._hub import save_config_for_hf
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    snap = os.path.join(repo, "snapshots", REV)
    os.makedirs(snap, exist_ok=True)
    tmp = os.path.join(repo, "tmp")
    os.makedirs(tmp, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tmodel.state_dict().items()},
              os.path.join(tmp, "model.safetensors"))
    save_config_for_hf(tmodel, os.path.join(tmp, "config.json"))
    for filename in ("model.safetensors", "config.json"):
        with open(os.path.join(tmp, filename), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        os.replace(os.path.join(tmp, filename), os.path.join(repo, "blobs", sha))
        os.symlink(os.path.join("..", "..", "blobs", sha), os.path.join(snap, filename))
    os.rmdir(tmp)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(REV)
    return os.path.join(snap, "model.safetensors")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An offline hub cache (filled by the tests) and a jaxvision cache, both temporary.
    huggingface_hub reads its environment when imported, so its constants are set too."""
    from huggingface_hub import constants
    root = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(root / "hub"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("JAXVISION_CACHE", str(root / "jv"))
        mp.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield root
