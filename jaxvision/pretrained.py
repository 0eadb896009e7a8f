"""Pretrained weights as Flax variables: timm's tags on the Hugging Face hub, or a local file.

``create_model(name, pretrained=...)`` and ``model_cfg(name, pretrained=...)`` come here.
``pretrained`` is one of

* ``True``: timm's default tag for ``name`` (``resnet50`` -> ``timm/resnet50.a1_in1k``);
* a tag: ``"timm/resnet50.a1_in1k"``, ``"resnet50.a1_in1k"`` or just ``"a1_in1k"``;
* a path to a ``.safetensors`` file, or to a ``.pth``/``.pt``/``.bin`` file read with
  ``torch.load(weights_only=True)`` (needs torch).

Hub files are fetched by ``huggingface_hub`` into its own cache, so its offline mode
(``HF_HUB_OFFLINE=1``) and cache location (``HF_HUB_CACHE``) apply; they are read with
``safetensors`` and converted by :mod:`jaxvision.convert` without torch.  The converted
variables are cached as a safetensors file under ``$JAXVISION_CACHE/pretrained`` (default
``~/.cache/jaxvision/pretrained``), keyed by model name and the weight file's content hash, so
a second call only reads that file.

Which tags exist is read from ``pretrained_tags.json``, shipped with the package and written
from timm's table by ``experiments/pretrained_tags.py`` (no network at run time).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from typing import Any

import numpy as np

from jaxvision.convert import ConversionError, convert_flat, head_keys
from jaxvision.registry import create_model, model_cfg
from jaxvision.utils import compile_init

logger = logging.getLogger("jaxvision")

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_TAGS = os.path.join(os.path.dirname(__file__), "pretrained_tags.json")
_FORMAT = "1"  # bump when the cached layout or a converter changes


class PretrainedError(ValueError):
    """Pretrained weights that cannot be found, read or fitted to the model."""


# ------------------------------------------------------------------------------------------
# Which weights exist
# ------------------------------------------------------------------------------------------

@functools.cache
def _tag_table() -> dict[str, dict]:
    with open(_TAGS) as f:
        return json.load(f)["models"]


def pretrained_names() -> list[str]:
    """Registered model names that have pretrained weights on the hub."""
    return sorted(_tag_table())


def cache_dir() -> str:
    root = os.environ.get("JAXVISION_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxvision")
    return os.path.join(root, "pretrained")


def is_weight_file(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and (
        str(value).endswith(WEIGHT_SUFFIXES) or os.path.sep in str(value) and
        os.path.exists(value))


def resolve_tag(name: str, pretrained) -> str:
    """The hub repository (``timm/<name>.<tag>``) that ``pretrained`` names for ``name``."""
    table = _tag_table()
    known = table.get(name, {}).get("tags", [])
    if pretrained is True:
        if name not in table:
            raise PretrainedError(
                f"no pretrained weights are known for {name!r}; "
                f"jaxvision.list_models(pretrained=True) lists the models that have them")
        return table[name]["default"]
    tag = str(pretrained)
    if tag.startswith("hf-hub:"):
        tag = tag[len("hf-hub:"):]
    if "/" not in tag:
        tag = f"timm/{tag}" if tag.startswith(name + ".") else f"timm/{name}.{tag}"
    owner, _, repo = tag.partition("/")
    if owner == "timm":
        arch = repo.split(".")[0]
        if arch != name:
            raise PretrainedError(f"tag {tag!r} holds weights of {arch!r}, not of {name!r}")
        if tag not in known:
            import difflib
            close = difflib.get_close_matches(tag, known, n=3, cutoff=0.5)
            listing = ", ".join(t.split(".", 1)[1] for t in (close or known[:8]))
            raise PretrainedError(
                f"unknown pretrained tag {tag!r} for {name!r}"
                + (f"; known tags include: {listing}" if known else
                   "; this model has no pretrained weights"))
    return tag


# ------------------------------------------------------------------------------------------
# Fetching and reading
# ------------------------------------------------------------------------------------------

def _hub_file(repo_id: str, filename: str, required: bool = True) -> str | None:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    try:
        return hf_hub_download(repo_id, filename)
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: caught first
        if not required:
            return None
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else "the hub could not be reached")
        raise PretrainedError(
            f"{repo_id}/{filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and {why}; download it once online, or pass a local .safetensors path") from e
    except EntryNotFoundError:
        if required:
            raise
        return None
    except RepositoryNotFoundError as e:
        raise PretrainedError(f"no repository {repo_id!r} on the Hugging Face hub") from e


def fetch(repo_id: str) -> tuple[str, dict | None]:
    """Local paths of a hub repository's weights (safetensors preferred) and its config."""
    from jaxvision.utils import require
    require("huggingface_hub", "pretrained", f"downloading {repo_id!r} from the Hugging Face hub")
    from huggingface_hub.errors import EntryNotFoundError
    config_path = _hub_file(repo_id, "config.json", required=False)
    config = None
    if config_path:
        with open(config_path) as f:
            config = json.load(f)
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return _hub_file(repo_id, filename), config
        except (EntryNotFoundError, PretrainedError) as e:
            last = e
    if isinstance(last, PretrainedError):
        raise last
    raise PretrainedError(f"{repo_id} holds neither model.safetensors nor pytorch_model.bin")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict of numpy arrays from a ``.safetensors`` file (no torch needed) or a
    torch pickle read with ``torch.load(weights_only=True)``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PretrainedError(f"weights file {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise PretrainedError(f"{path} is not a readable safetensors file: {e}") from e
    if path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as e:
            raise PretrainedError(f"reading {path} needs torch (pip install torch), or "
                                  f"convert it to .safetensors") from e
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle
            raise PretrainedError(f"{path} is not a torch state dict: {e}") from e
        for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not obj or not all(
                isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items()):
            raise PretrainedError(f"{path} does not hold a state dict (a mapping of names to "
                                  f"tensors); it holds a {type(obj).__name__}")
        from jaxvision.convert import to_numpy
        return {k: to_numpy(v) for k, v in obj.items()}
    raise PretrainedError(f"unknown weights format {path!r}; use one of {WEIGHT_SUFFIXES}")


def _content_key(path: str) -> str:
    """The weight file's sha256: the hub cache names its blobs by it, else it is computed."""
    real = os.path.realpath(path)
    if re.fullmatch(r"[0-9a-f]{64}", os.path.basename(real)):
        return os.path.basename(real)
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_classes(name: str, sd, config: dict | None, model_kwargs) -> int:
    if config and isinstance(config.get("num_classes"), int):
        return config["num_classes"]
    try:  # the classifier is what a headless model leaves unread
        heads = [k for k in head_keys(name, sd, **model_kwargs) if k.endswith("weight")]
    except Exception:
        heads = []
    return int(np.shape(sd[heads[-1]])[0]) if heads else model_cfg(name)["num_classes"]


# ------------------------------------------------------------------------------------------
# Converted variables (cached) and the head
# ------------------------------------------------------------------------------------------

def converted(name: str, pretrained, **model_kwargs) -> tuple[dict, int, dict | None]:
    """Flat ``{path: array}`` of the pretrained variables with their own head, the number of
    classes of that head, and the hub config (None for a local file)."""
    from safetensors.numpy import load_file, save_file
    if is_weight_file(pretrained):
        path, config, source = os.fspath(pretrained), None, os.path.abspath(pretrained)
        side = os.path.join(os.path.dirname(path), "config.json")
        if os.path.isfile(side):
            with open(side) as f:
                config = json.load(f)
    else:
        source = resolve_tag(name, pretrained)
        path, config = fetch(source)
    if not os.path.isfile(path):
        raise PretrainedError(f"weights file {path} does not exist")
    shape_kwargs = {k: v for k, v in sorted(model_kwargs.items()) if k != "dtype"}
    key = hashlib.sha256(json.dumps([_FORMAT, name, _content_key(path), repr(shape_kwargs)])
                         .encode()).hexdigest()[:24]
    cached = os.path.join(cache_dir(), f"{name}-{key}.safetensors")
    if os.path.isfile(cached):
        from safetensors import safe_open
        with safe_open(cached, "np") as f:
            classes = int(f.metadata()["num_classes"])
        flat = load_file(cached)
        return {tuple(k.split("/")): v for k, v in flat.items()}, classes, config

    sd = read_state_dict(path)
    classes = _source_classes(name, sd, config, shape_kwargs)
    try:
        flat = convert_flat(name, sd, num_classes=classes, **shape_kwargs)
    except ConversionError as e:
        raise PretrainedError(f"{source}: {e}") from e
    flat = {k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()}
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = f"{cached}.{os.getpid()}.tmp"
    save_file({"/".join(k): v for k, v in flat.items()}, tmp,
              metadata={"model": name, "source": str(source), "num_classes": str(classes)})
    os.replace(tmp, cached)  # atomic: a reader never sees half a file
    return flat, classes, config


def load(name: str, pretrained, num_classes: int | None = None, seed: int = 0,
         **model_kwargs) -> tuple[Any, dict]:
    """``(model, variables)``: ``create_model(name, num_classes=..., **model_kwargs)`` and
    its pretrained variables.  A ``num_classes`` other than the weights' gets a freshly
    initialised head (``seed`` draws it); ``num_classes=0`` drops the head."""
    import jax.numpy as jnp
    from flax import traverse_util

    flat, classes, _ = converted(name, pretrained, **model_kwargs)
    target = classes if num_classes is None else int(num_classes)
    model = create_model(name, num_classes=target, **model_kwargs)
    if target != classes:
        flat = replace_head(model, name, flat, seed, f"{classes} classes", target)
    variables = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
    return model, variables


def replace_head(model, name: str, flat: dict, seed: int, what: str, target: int) -> dict:
    """Keep the pretrained entries whose path and shape ``model`` has; initialise the rest."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from jaxvision.convert import flat_shapes
    input_size = model_cfg(name)["input_size"]
    expected = flat_shapes(model, input_size)
    fresh = [k for k, s in expected.items() if k not in flat or tuple(flat[k].shape) != s]
    kept = {k: v for k, v in flat.items() if k in expected and k not in fresh}
    dropped = sorted("/".join(k) for k in set(flat) - set(kept))
    if fresh:
        # Only the new entries are outputs, so XLA drops the rest of the model's
        # initialisation (its forward pass included): compiling this costs next to nothing.
        def init(rng):
            full = model.init(rng, jnp.zeros((1, *input_size)), train=False)
            flat_new = traverse_util.flatten_dict(dict(full))
            return {"/".join(k): flat_new[k] for k in fresh}
        key = jax.random.PRNGKey(seed)
        new = compile_init(jax.jit(init), key)(key)
        kept.update({k: np.asarray(new["/".join(k)]) for k in fresh})
    logger.warning("%s: pretrained head (%s) %s", name, what,
                   f"replaced by a new one for {target} classes: "
                   f"{', '.join('/'.join(k) for k in sorted(fresh))}" if target
                   else f"dropped (num_classes=0): {', '.join(dropped)}")
    return kept


def data_config(name: str, pretrained) -> dict[str, Any]:
    """``model_cfg(name)`` updated with the weights' data config (mean, std, crop_pct,
    interpolation, input_size, num_classes) from the hub's (or the file's) config.json."""
    cfg = dict(model_cfg(name), interpolation=model_cfg(name).get("interpolation", "bilinear"))
    if is_weight_file(pretrained):
        side = os.path.join(os.path.dirname(os.fspath(pretrained)), "config.json")
        hub = json.load(open(side)) if os.path.isfile(side) else None
    else:
        path = _hub_file(resolve_tag(name, pretrained), "config.json", required=True)
        with open(path) as f:
            hub = json.load(f)
    pc = (hub or {}).get("pretrained_cfg", {})
    for key in ("mean", "std"):
        if key in pc:
            cfg[key] = tuple(float(v) for v in pc[key])
    for key in ("crop_pct", "interpolation", "crop_mode"):
        if key in pc:
            cfg[key] = pc[key]
    if "input_size" in pc:
        c, h, w = pc["input_size"]
        cfg["input_size"] = (h, w, c)
    if isinstance((hub or {}).get("num_classes"), int):
        cfg["num_classes"] = hub["num_classes"]
    return cfg


__all__ = ["PretrainedError", "cache_dir", "converted", "data_config", "fetch", "load",
           "pretrained_names", "read_state_dict", "replace_head", "resolve_tag"]
