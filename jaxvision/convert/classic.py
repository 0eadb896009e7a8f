"""Converters for the classic ConvNets: VGG (timm; torchvision's layout accepted too),
AlexNet and GoogLeNet (torchvision)."""
from __future__ import annotations

from jaxvision.convert import Converter, register_converter
from jaxvision.models.googlenet import MODULE_NAMES


def _linear_from_chw(channels: int, hw: int):
    """torch Linear weight over a flattened (C, H, W) map -> Flax Dense kernel over (H, W, C)."""
    def fn(w):
        out = w.shape[0]
        return w.reshape(out, channels, hw, hw).transpose(2, 3, 1, 0).reshape(-1, out)
    return fn


@register_converter("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
                    "vgg19_bn")
def convert_vgg(c: Converter, model):
    i = 0
    for v in model.cfg:
        if v == "M":
            i += 1
        elif v == "L":
            continue
        else:
            c.conv(f"features_{i}", f"features.{i}")
            if model.batch_norm:
                c.bn(f"features_{i + 1}", f"features.{i + 1}")
                i += 1
            i += 2
    if c.has("classifier.0.weight"):
        # torchvision: Linear(512*7*7, 4096), Linear(4096, 4096), Linear(4096, classes);
        # the first two become the 7x7 and 1x1 convolutions of the dense-evaluation head.
        c.raw("params/pre_logits_fc1/kernel", "classifier.0.weight",
              lambda w: w.reshape(w.shape[0], -1, 7, 7).transpose(2, 3, 1, 0))
        c.raw("params/pre_logits_fc1/bias", "classifier.0.bias")
        c.raw("params/pre_logits_fc2/kernel", "classifier.3.weight",
              lambda w: w.T[None, None])
        c.raw("params/pre_logits_fc2/bias", "classifier.3.bias")
        if model.num_classes:
            c.dense("head_fc", "classifier.6")
    else:
        c.conv("pre_logits_fc1", "pre_logits.fc1")
        c.conv("pre_logits_fc2", "pre_logits.fc2")
        if model.num_classes:
            c.dense("head_fc", "head.fc")


@register_converter("alexnet")
def convert_alexnet(c: Converter, model):
    for j, idx in enumerate((0, 3, 6, 8, 10)):
        c.conv(f"conv{j + 1}", f"features.{idx}")
    c.raw("params/fc1/kernel", "classifier.1.weight",
          _linear_from_chw(model.widths[-1], model.pool_size))
    c.raw("params/fc1/bias", "classifier.1.bias")
    c.dense("fc2", "classifier.4")
    if model.num_classes:
        c.dense("head", "classifier.6")


def _basic(c: Converter, path: str, prefix: str):
    c.conv(f"{path}/conv", f"{prefix}.conv")
    c.bn(f"{path}/bn", f"{prefix}.bn")


@register_converter("googlenet")
def convert_googlenet(c: Converter, model):
    for name in ("conv1", "conv2", "conv3"):
        _basic(c, name, name)
    for m in MODULE_NAMES:
        p = f"inception{m}"
        _basic(c, f"{p}/branch1", f"{p}.branch1")
        for b, j in (("branch2", 0), ("branch2", 1), ("branch3", 0), ("branch3", 1),
                     ("branch4", 1)):
            _basic(c, f"{p}/{b}_{j}", f"{p}.{b}.{j}")
    if model.aux_logits and model.num_classes:
        for aux in ("aux1", "aux2"):
            _basic(c, f"{aux}/conv", f"{aux}.conv")
            c.raw(f"params/{aux}/fc1/kernel", f"{aux}.fc1.weight",
                  _linear_from_chw(model.aux_widths[0], 4))
            c.raw(f"params/{aux}/fc1/bias", f"{aux}.fc1.bias")
            c.dense(f"{aux}/fc2", f"{aux}.fc2")
    if model.num_classes:
        c.dense("fc", "fc")
