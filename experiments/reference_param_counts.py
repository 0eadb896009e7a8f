"""Write the reference parameter counts of every registered model that timm or torchvision
also provides, counted from timm/torchvision themselves (never from jaxvision).

    python experiments/reference_param_counts.py      # -> tests/golden/reference/param_counts.json

The models are built on torch's meta device (shapes only, nothing allocated).  The file
records the timm/torchvision/torch versions it was made with; ``tests/test_param_counts.py``
compares jaxvision's golden counts with it, and with timm itself where timm is installed.
"""
from __future__ import annotations

import datetime
import json
import os
import sys

OUT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "golden", "reference",
                   "param_counts.json")

# How a registered name is built in the reference library where its default differs from
# the registered model: torchvision's GoogLeNet has auxiliary heads unless asked (its
# released weights have none, nor has jaxvision's ``googlenet``).
TORCHVISION_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False}}


def reference_model(name: str, num_classes: int, timm_names=None, torchvision_names=None):
    """The timm model of that name (torchvision where timm has none) on the meta device,
    or None where neither has it.  ``num_classes`` is given explicitly: several timm
    defaults (e.g. ``vit_huge_patch14_224``, an ImageNet-21k backbone) have no head."""
    import timm
    import torch
    import torchvision
    timm_names = set(timm.list_models()) if timm_names is None else timm_names
    if torchvision_names is None:
        torchvision_names = set(torchvision.models.list_models())
    with torch.device("meta"):
        if name in timm_names:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        if name in torchvision_names:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                                **TORCHVISION_KWARGS.get(name, {}))
    return None


def reference_counts(names_and_classes) -> dict[str, int]:
    import timm
    import torchvision
    timm_names, tv_names = set(timm.list_models()), set(torchvision.models.list_models())
    counts = {}
    for name, num_classes in names_and_classes:
        m = reference_model(name, num_classes, timm_names, tv_names)
        if m is not None:
            counts[name] = sum(p.numel() for p in m.parameters())
    return counts


def versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision
    return {"timm": timm.__version__, "torchvision": torchvision.__version__,
            "torch": torch.__version__}


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
    import jaxvision  # only for the list of names and their class counts
    names = jaxvision.list_models(exclude="test_*")
    counts = reference_counts((n, jaxvision.model_cfg(n)["num_classes"]) for n in names)
    doc = {
        "provenance": {
            "source": "timm.create_model(name, num_classes=...) or "
                      "torchvision.models.get_model(name, weights=None, num_classes=...) on "
                      "torch's meta device; sum of parameters().numel()",
            "torchvision_kwargs": TORCHVISION_KWARGS,
            "versions": versions(),
            "date": datetime.date.today().isoformat(),
            "command": "python experiments/reference_param_counts.py",
        },
        "no_reference": sorted(n for n in names if n not in counts),
        "counts": dict(sorted(counts.items())),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{len(counts)} reference counts, {len(doc['no_reference'])} names without one "
          f"-> {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
