"""Helpers for numerical equivalence against the torch reference (timm / torchvision).

Tests import this through ``pytest.importorskip``-style guards so they skip cleanly when
torch is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def randomize_(model, seed: int = 0):
    """Randomise every norm scale/bias, running statistic and bias of a torch model in place,
    so that equivalence tests exercise all of them (fresh models have ones and zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.75)
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm scales/biases, conv/linear biases, gains, layer scales
                if name.endswith("weight") or "gamma" in name or "gain" in name or "scale" in name:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def torch_logits(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def assert_logits_close(jax_logits, torch_logits_, rtol=1e-4):
    """max |diff| / max |torch logit| <= rtol."""
    jax_logits = np.asarray(jax_logits, np.float64)
    ref = np.asarray(torch_logits_, np.float64)
    assert jax_logits.shape == ref.shape, (jax_logits.shape, ref.shape)
    rel = np.max(np.abs(jax_logits - ref)) / max(np.max(np.abs(ref)), 1e-12)
    assert rel <= rtol, f"relative max error {rel:.3e} > {rtol:.0e}"


def check_equivalence(name: str, tmodel, input_hw=(64, 64), batch=2, rtol=1e-4, seed=0,
                      **jax_kwargs):
    """Convert ``tmodel``'s randomised weights with ``from_torch`` and compare eval logits."""
    import jax
    import jaxvision
    from jaxvision.convert import from_torch

    randomize_(tmodel, seed)
    chans = jaxvision.model_cfg(name)["input_size"][2]
    x = np.random.default_rng(seed).standard_normal((batch, *input_hw, chans)).astype(np.float32)
    variables = from_torch(name, tmodel.state_dict(), input_size=(*input_hw, chans), **jax_kwargs)
    model = jaxvision.create_model(name, **jax_kwargs)
    from tests.quick_compile import jit_o0
    out = jit_o0(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert_logits_close(out, torch_logits(tmodel, x), rtol)
