"""Converters for timm's Inception-v3, Inception-v4 and Inception-ResNet-v2.

The Flax variable names of these models mirror timm's module paths with one rule: a numeric
path component (a ``Sequential`` index) is joined to its parent with ``_``
(``features.4.branch1.2.conv`` -> ``features_4/branch1_2/conv``).  The converter therefore
walks the state dict and classifies each module by its tensors: conv (4-D weight), linear
(2-D weight) or BatchNorm (1-D weight with running statistics).  Anything the model has but
the state dict does not (or the reverse) is reported by ``from_torch``.
"""
from __future__ import annotations

from jaxvision.convert import Converter, ConversionError, register_converter


def flax_path(torch_prefix: str) -> str:
    """``'features.4.branch1.2.conv'`` -> ``'features_4/branch1_2/conv'``."""
    parts: list[str] = []
    for p in torch_prefix.split("."):
        if p.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{p}"
        else:
            parts.append(p)
    return "/".join(parts)


def convert_by_name(c: Converter):
    modules = sorted({k.rsplit(".", 1)[0] for k in c.keys() if k.endswith(".weight")})
    for prefix in modules:
        path = flax_path(prefix)
        ndim = c.sd[f"{prefix}.weight"].ndim
        if c.has(f"{prefix}.running_mean"):
            c.bn(path, prefix)
        elif ndim == 4:
            c.conv(path, prefix)
        elif ndim == 2:
            c.dense(path, prefix)
        else:
            raise ConversionError(f"cannot classify torch module {prefix!r} "
                                  f"(weight with {ndim} dims)")


@register_converter("inception_v3", "inception_v4", "inception_resnet_v2")
def convert_inception(c: Converter, model):
    # A headless model (num_classes=0) takes a classifier-free state dict
    # (timm's reset_classifier(0)); any leftover classifier keys are reported as unexpected.
    # timm's AuxLogits exists only with aux_logits=True, matching the Flax model's field.
    convert_by_name(c)
