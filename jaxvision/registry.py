"""Model registry: ``@register_model``, ``list_models``, ``create_model``, ``model_cfg``.

Every model family registers its named variants here with a small entry point that
returns a ``flax.linen.Module``.  Names follow timm/torchvision where a reference exists.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable

import flax.linen as nn

from jaxvision.eval_cfgs import EVAL_CFGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_DEFAULT_CFG = dict(
    input_size=(224, 224, 3),
    num_classes=1000,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_pct=0.875,
    # eval resize (timm's eval transform): 'bilinear' | 'bicubic' | ...; crop_mode 'center'
    # keeps the aspect ratio, 'squash' resizes both sides (timm's dm_nfnet configs).  Models
    # timm has take timm's values from jaxvision/eval_cfgs.py unless they give their own.
    interpolation="bilinear",
    crop_mode="center",
)

# name -> (entry point, data contract).  Filled at import time by the model modules only.
_MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered."""

    def __str__(self):  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


def register_model(fn: Callable | None = None, **cfg):
    """Register a model entry point under its function name.

    Usable bare (``@register_model``) or with the model's data contract
    (``@register_model(input_size=(32, 32, 3), num_classes=10, mean=..., std=...)``).
    Keys not given fall back to the ImageNet defaults.
    """
    unknown = set(cfg) - set(_DEFAULT_CFG)
    if unknown:
        raise TypeError(f"register_model got unknown cfg keys {sorted(unknown)}; "
                        f"allowed: {sorted(_DEFAULT_CFG)}")

    def wrap(f):
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        full = dict(_DEFAULT_CFG, **EVAL_CFGS.get(name, {}), **cfg)
        full["input_size"] = tuple(full["input_size"])
        _MODELS[name] = (f, full)
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded():
    # Importing the package registers every family.
    import jaxvision.models  # noqa: F401


def list_models(pattern: str = "*", exclude: str | None = None,
                pretrained: bool = False) -> list[str]:
    """Sorted names of registered models matching an fnmatch ``pattern``; with
    ``pretrained=True``, only those with pretrained weights (``jaxvision/pretrained.py``)."""
    _ensure_loaded()
    names = [n for n in _MODELS if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:  # --- pretrained weights (jaxvision/pretrained.py) ---
        from jaxvision.pretrained import pretrained_names
        names = [n for n in names if n in set(pretrained_names())]
    if exclude is not None:
        names = [n for n in names if not fnmatch.fnmatchcase(n, exclude)]
    return sorted(names)


def _lookup(name: str):
    _ensure_loaded()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        prefix = [n for n in _MODELS if n.startswith(name.split("_")[0])][:5]
        hints = list(dict.fromkeys(close + prefix))[:5]
        hint = f" Closest registered names: {', '.join(hints)}." if hints else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} See jaxvision.list_models() for all "
            f"{len(_MODELS)} names.")
    return _MODELS[name]


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _MODELS


def model_cfg(name: str, pretrained=None) -> dict[str, Any]:
    """The data contract of a model: input_size (H, W, C), num_classes, mean, std, and its
    eval transform's crop_pct, interpolation and crop_mode; with ``pretrained`` (as in
    ``create_model``), that of those weights."""
    if pretrained is not None and pretrained is not False:  # --- pretrained weights ---
        from jaxvision.pretrained import data_config
        return data_config(name, pretrained)
    return dict(_lookup(name)[1])


def create_model(name: str, pretrained=None, **kwargs):
    """Build a registered model; ``kwargs`` override the family's defaults.

    With ``pretrained`` (``True`` for timm's default tag, a tag such as
    ``"timm/resnet50.a1_in1k"``, or a ``.safetensors``/``.pth`` path) returns
    ``(model, variables)`` with the loaded weights (``jaxvision/pretrained.py``); a
    ``num_classes`` other than the weights' gets a new head.  Without it, the module alone.
    A keyword the model does not accept raises a ``TypeError`` naming it.
    """
    fn, _ = _lookup(name)
    if pretrained is not None and pretrained is not False:  # --- pretrained weights ---
        from jaxvision.pretrained import load
        return load(name, pretrained, **kwargs)
    try:
        return fn(**kwargs)
    except TypeError as e:
        # Make "unexpected keyword" errors name the model and its accepted fields.
        if "unexpected keyword" in str(e) or "got an unexpected" in str(e):
            module = fn()
            fields = sorted(f for f in getattr(module, "__dataclass_fields__", {})
                            if f not in ("parent", "name"))
            raise TypeError(f"create_model({name!r}): {e}. Accepted keyword arguments: "
                            f"{', '.join(fields)}") from None
        raise


def entry_point(name: str) -> Callable[..., nn.Module]:
    return _lookup(name)[0]


def model_family(name: str) -> str:
    """The module (family) that defines a model, e.g. 'resnet'."""
    return inspect.getmodule(_lookup(name)[0]).__name__.rsplit(".", 1)[-1]
