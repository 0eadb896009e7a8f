"""timm (and torchvision) ResNet-family state dicts -> jaxvision variables.

Covers :class:`jaxvision.models.resnet.ResNet` (ResNet, ResNet-D, Wide ResNet, ResNeXt,
SE-ResNe(X)t, SENet-154) and :class:`jaxvision.models.resnetv2.ResNetV2` under the names
timm uses.  torchvision's ``resnet*``, ``wide_resnet*`` and ``resnext*`` state dicts share
timm's keys and convert the same way.
"""
from __future__ import annotations

from jaxvision.convert import Converter, register_converter

RESNET_NAMES = (
    "resnet18", "resnet18d", "resnet34", "resnet34d", "resnet50", "resnet50d", "resnet101",
    "resnet101d", "resnet152", "resnet152d", "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
    "seresnext50_32x4d", "seresnext101_32x4d", "seresnext101_32x8d", "seresnext101_64x4d",
    "senet154",
)
RESNETV2_NAMES = ("resnetv2_18", "resnetv2_34", "resnetv2_50", "resnetv2_50d", "resnetv2_101",
                  "resnetv2_152")


@register_converter(*RESNET_NAMES)
def convert_resnet(c: Converter, model):
    """timm ``resnet.py`` keys: conv1[.i], bn1, layer{s}.{b}.{conv,bn}{1,2,3}, se.fc{1,2},
    downsample.{0,1} (or {1,2} after ResNet-D's average pool), fc."""
    if model.stem_type.startswith("deep"):
        for i in (0, 3, 6):
            c.conv(f"conv1_{i}", f"conv1.{i}")
        for i in (1, 4):
            c.bn(f"conv1_{i}", f"conv1.{i}")
    else:
        c.conv("conv1", "conv1")
    c.bn("bn1", "bn1")

    n_convs = 3 if model.block.expansion == 4 else 2
    for s, n in enumerate(model.stage_sizes):
        for b in range(n):
            src, dst = f"layer{s + 1}.{b}", f"layer{s + 1}_{b}"
            for k in range(1, n_convs + 1):
                c.conv(f"{dst}/conv{k}", f"{src}.conv{k}")
                c.bn(f"{dst}/bn{k}", f"{src}.bn{k}")
            if model.attn == "se":
                c.conv(f"{dst}/se/fc1", f"{src}.se.fc1")
                c.conv(f"{dst}/se/fc2", f"{src}.se.fc2")
            elif model.attn is not None:
                raise ValueError(f"no torch layout is known for attention {model.attn!r}")
            # The shortcut's index inside timm's nn.Sequential depends on whether an
            # average pool (parameter-free, still indexed) precedes the conv.
            off = 1 if model.avg_down else 0
            if c.has(f"{src}.downsample.{off}.weight"):
                c.conv(f"{dst}/downsample_conv", f"{src}.downsample.{off}")
                c.bn(f"{dst}/downsample_bn", f"{src}.downsample.{off + 1}")
    if model.num_classes:
        c.dense("fc", "fc")


@register_converter(*RESNETV2_NAMES)
def convert_resnetv2(c: Converter, model):
    """timm ``resnetv2.py`` keys: stem.conv (or stem.conv{1,2,3}/norm{1,2}),
    stages.{s}.blocks.{b}.{norm,conv}{1,2,3} and .downsample.conv, norm, head.fc (1x1 conv)."""
    if model.stem_type == "deep":
        for i in (1, 2, 3):
            c.conv(f"stem_conv{i}", f"stem.conv{i}")
        for i in (1, 2):
            c.bn(f"stem_norm{i}", f"stem.norm{i}")
    else:
        c.conv("stem_conv", "stem.conv")
    n_convs = 2 if model.basic else 3
    for s, n in enumerate(model.stage_sizes):
        for b in range(n):
            src, dst = f"stages.{s}.blocks.{b}", f"stages_{s}_{b}"
            for k in range(1, n_convs + 1):
                c.bn(f"{dst}/norm{k}", f"{src}.norm{k}")
                c.conv(f"{dst}/conv{k}", f"{src}.conv{k}")
            if c.has(f"{src}.downsample.conv.weight"):
                c.conv(f"{dst}/downsample_conv", f"{src}.downsample.conv")
    c.bn("norm", "norm")
    if model.num_classes:
        # timm's head is a 1x1 conv (O, I, 1, 1); here it is a Dense (I, O).
        c.raw("params/head_fc/kernel", "head.fc.weight", lambda w: w[:, :, 0, 0].T)
        c.raw("params/head_fc/bias", "head.fc.bias")


__all__ = ["RESNETV2_NAMES", "RESNET_NAMES", "convert_resnet", "convert_resnetv2"]
