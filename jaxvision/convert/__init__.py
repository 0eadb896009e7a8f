"""Convert torch (timm / torchvision) state dicts into Flax variables.

``from_torch(name, state_dict)`` builds ``{'params': ..., 'batch_stats': ...}`` for
``create_model(name)`` from a state dict keyed exactly like the timm model of the same
name (torchvision where timm has none).  Every family registers a converter in
``jaxvision/convert/<family>.py`` with :func:`register_converter`; a converter reads tensors through a :class:`Converter`, which
records what it consumed, so that *all* missing, unexpected and mismatched entries are
reported together in one :class:`ConversionError`.

No torch import is needed here: tensors are turned into numpy arrays on entry.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxvision.registry import create_model, model_cfg
from jaxvision.utils import variable_shapes

# torch buffers that have no Flax counterpart.
IGNORED_SUFFIXES = ("num_batches_tracked",)

_CONVERTERS: list[tuple[str, Callable]] = []


class ConversionError(ValueError):
    """A state dict that does not fit the model; lists every problem at once."""


def register_converter(*patterns: str):
    """Register ``fn(c: Converter)`` for model names matching any fnmatch ``pattern``."""

    def wrap(fn):
        for p in patterns:
            _CONVERTERS.append((p, fn))
        return fn

    return wrap


def to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # torch.Tensor, without importing torch
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        v = v.numpy()
    return np.asarray(v)


class Converter:
    """Reads a torch state dict and writes flat Flax entries.

    Flax paths are '/'-joined strings under a collection, e.g.
    ``c.conv('params/layer1_0/conv1', 'layer1.0.conv1')``.
    """

    def __init__(self, state_dict: Mapping[str, Any]):
        self.sd = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.out: dict[tuple[str, ...], np.ndarray] = {}

    # -- reading -------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str) -> np.ndarray | None:
        if key not in self.sd:
            self.missing.append(key)
            return None
        self.used.add(key)
        return to_numpy(self.sd[key])

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.sd if k.startswith(prefix)]

    # -- writing -------------------------------------------------------------------
    def put(self, path: str, value: np.ndarray | None, fn: Callable | None = None):
        if value is None:
            return
        self.out[tuple(path.split("/"))] = fn(value) if fn is not None else value

    def raw(self, path: str, key: str, fn: Callable | None = None):
        self.put(path, self.get(key), fn)

    def conv(self, path: str, prefix: str, bias: bool | None = None):
        """torch Conv2d (O, I/g, kH, kW) -> Flax Conv kernel (kH, kW, I/g, O)."""
        self.raw(f"params/{path}/kernel", f"{prefix}.weight", lambda w: w.transpose(2, 3, 1, 0))
        if bias or (bias is None and self.has(f"{prefix}.bias")):
            self.raw(f"params/{path}/bias", f"{prefix}.bias")

    def dense(self, path: str, prefix: str, bias: bool | None = None):
        """torch Linear (out, in) -> Flax Dense kernel (in, out)."""
        self.raw(f"params/{path}/kernel", f"{prefix}.weight", lambda w: w.T)
        if bias or (bias is None and self.has(f"{prefix}.bias")):
            self.raw(f"params/{path}/bias", f"{prefix}.bias")

    def bn(self, path: str, prefix: str):
        """torch BatchNorm -> Flax BatchNorm params (scale, bias) and batch_stats (mean, var)."""
        self.raw(f"params/{path}/scale", f"{prefix}.weight")
        self.raw(f"params/{path}/bias", f"{prefix}.bias")
        self.raw(f"batch_stats/{path}/mean", f"{prefix}.running_mean")
        self.raw(f"batch_stats/{path}/var", f"{prefix}.running_var")

    def ln(self, path: str, prefix: str):
        """torch LayerNorm / GroupNorm affine -> Flax LayerNorm (scale, bias)."""
        self.raw(f"params/{path}/scale", f"{prefix}.weight")
        self.raw(f"params/{path}/bias", f"{prefix}.bias")


def _load_converters():
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def find_converter(name: str) -> Callable:
    _load_converters()  # each family's converter lives in jaxvision/convert/<family>.py
    for pattern, fn in _CONVERTERS:
        if fnmatch.fnmatchcase(name, pattern):
            return fn
    raise ConversionError(f"no torch converter is registered for model {name!r}")


def flat_shapes(model, input_size) -> dict[tuple[str, ...], tuple]:
    """Flat ``{path: shape}`` of a model's variables, without allocating them."""
    shapes = variable_shapes(model, input_size)
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(shapes)).items()}


def from_torch(name: str, state_dict: Mapping[str, Any], *, input_size=None,
               **model_kwargs) -> dict:
    """Flax variables for ``create_model(name, **model_kwargs)`` from a torch state dict.

    Checks every key and shape; raises one :class:`ConversionError` listing all missing,
    unexpected and mismatched entries.
    """
    flat = convert_flat(name, state_dict, input_size=input_size, **model_kwargs)
    return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


def convert_flat(name: str, state_dict: Mapping[str, Any], *, input_size=None,
                 **model_kwargs) -> dict[tuple[str, ...], np.ndarray]:
    """As :func:`from_torch`, but flat ``{path tuple: numpy array}`` (no device copies)."""
    model = create_model(name, **model_kwargs)
    converter = find_converter(name)
    c = Converter(state_dict)
    converter(c, model)
    expected = flat_shapes(model, input_size or model_cfg(name)["input_size"])

    problems = []
    if c.missing:
        problems.append(f"missing torch keys ({len(c.missing)}): {', '.join(c.missing[:20])}")
    unused = sorted(set(c.sd) - c.used)
    if unused:
        problems.append(f"unexpected torch keys ({len(unused)}): {', '.join(unused[:20])}")
    not_filled = sorted("/".join(k) for k in set(expected) - set(c.out))
    if not_filled and not c.missing:
        problems.append(f"Flax variables with no source ({len(not_filled)}): "
                        f"{', '.join(not_filled[:20])}")
    extra = sorted("/".join(k) for k in set(c.out) - set(expected))
    if extra:
        problems.append(f"converted entries the model does not have ({len(extra)}): "
                        f"{', '.join(extra[:20])}")
    bad = [f"{'/'.join(k)}: model {expected[k]} vs converted {tuple(v.shape)}"
           for k, v in c.out.items() if k in expected and tuple(v.shape) != expected[k]]
    if bad:
        problems.append(f"shape mismatches ({len(bad)}): {'; '.join(bad[:20])}")
    if problems:
        raise ConversionError(f"state dict does not fit {name!r}:\n  " + "\n  ".join(problems))
    return c.out


def head_keys(name: str, state_dict: Mapping[str, Any], **model_kwargs) -> list[str]:
    """The state-dict keys of the classifier: those a headless (``num_classes=0``) model
    leaves unread."""
    model = create_model(name, **dict(model_kwargs, num_classes=0))
    c = Converter(state_dict)
    find_converter(name)(c, model)
    return sorted(set(c.sd) - c.used)


def load_pretrained(name: str, pretrained=True, **model_kwargs) -> dict:
    """Pretrained variables for ``name``: ``create_model(name, pretrained=...)[1]``
    (timm's weights from the Hugging Face hub or a local file; see ``jaxvision.pretrained``).
    Needs neither torch nor timm."""
    from jaxvision.pretrained import load
    return load(name, pretrained, **model_kwargs)[1]


__all__ = ["ConversionError", "Converter", "convert_flat", "flat_shapes", "from_torch",
           "head_keys", "load_pretrained", "register_converter", "to_numpy"]
