"""Write the files that ship with the package and describe pretrained weights and classes.

    PYTHONPATH=. python experiments/pretrained_tags.py

* ``jaxvision/pretrained_tags.json``: for every registered model whose timm counterpart (timm
  also publishes torchvision's weights, as ``<name>.tv_in1k``) has weights on the Hugging Face
  hub and whose state dict converts key for key (checked here on shapes), its default tag and
  all its tags, from timm's own pretrained-config table
  (``timm.list_pretrained`` / ``timm.models.get_pretrained_cfg``).  Read at run time by
  ``jaxvision.list_models(pretrained=True)`` and ``create_model(name, pretrained=True)``:
  no network is needed to know which tags exist.
* ``jaxvision/imagenet1k_classes.txt``: the 1,000 ImageNet-1k class names in timm's label order
  (``timm.data.ImageNetInfo().label_descriptions()``), one per line.

Both record the timm version they came from (the JSON in its ``provenance`` entry, the text
file in ``jaxvision/imagenet1k_classes.PROVENANCE``).  Needs torch and timm (the ``convert``
extra).
"""
import datetime
import json
import os
import sys

import numpy as np
import timm
import torch
from timm.models import get_pretrained_cfg

import jaxvision
from jaxvision.convert import ConversionError, convert_flat

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "jaxvision")


def converts(arch: str) -> bool:
    """Whether timm's state dict for ``arch`` fits jaxvision's model key for key and shape
    (checked on shapes alone: a meta-device model and zero-strided numpy arrays)."""
    with torch.device("meta"):
        tm = timm.create_model(arch, pretrained=False)
    sd = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape))
          for k, v in tm.state_dict().items()}
    try:
        convert_flat(arch, sd)
        return True
    except ConversionError as e:
        print(f"skipped {arch}: {str(e).splitlines()[0]}", file=sys.stderr)
        return False


def main():
    registered = set(jaxvision.list_models())
    models = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        if arch not in registered:
            continue
        cfg = get_pretrained_cfg(full)
        if cfg is None or not (cfg.hf_hub_id or "").startswith("timm/"):
            continue  # only timm-format weights published on the hub can be fetched
        entry = models.setdefault(arch, {"default": None, "tags": []})
        entry["tags"].append(cfg.hf_hub_id)
    models = {a: e for a, e in models.items() if converts(a)}
    for arch, entry in models.items():
        entry["default"] = get_pretrained_cfg(arch).hf_hub_id  # timm's default for the name
        if entry["default"] not in entry["tags"]:
            entry["default"] = entry["tags"][0]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = {"provenance": {"source": "timm.list_pretrained() / timm.models.get_pretrained_cfg",
                          "timm": timm.__version__, "date": now,
                          "command": "PYTHONPATH=. python experiments/pretrained_tags.py"},
           "models": dict(sorted(models.items()))}
    with open(os.path.join(ROOT, "pretrained_tags.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    names = timm.data.ImageNetInfo().label_descriptions()
    assert len(names) == 1000, len(names)
    with open(os.path.join(ROOT, "imagenet1k_classes.txt"), "w") as f:
        f.write("\n".join(n.split(",")[0].strip() for n in names) + "\n")
    with open(os.path.join(ROOT, "imagenet1k_classes.PROVENANCE"), "w") as f:
        f.write(f"timm.data.ImageNetInfo().label_descriptions() (first synonym of each), "
                f"timm {timm.__version__}, {now}; written by experiments/pretrained_tags.py\n")
    print(f"{len(models)} models with pretrained tags; {len(names)} ImageNet class names",
          file=sys.stderr)


if __name__ == "__main__":
    main()
