"""timm ResNeSt state dicts (``ResNet`` + ``ResNestBottleneck``) -> ``ResNeSt``."""
from jaxvision.convert import register_converter


@register_converter("resnest*", "test_resnest")
def convert_resnest(c, model):
    for i in (0, 3, 6):
        c.conv(f"conv1_{i}", f"conv1.{i}")
    c.bn("conv1_1", "conv1.1")
    c.bn("conv1_4", "conv1.4")
    c.bn("bn1", "bn1")
    for s, n in enumerate(model.layers):
        for b in range(n):
            src, dst = f"layer{s + 1}.{b}", f"layer{s + 1}_{b}"
            c.conv(f"{dst}/conv1", f"{src}.conv1")
            c.bn(f"{dst}/bn1", f"{src}.bn1")
            if model.radix >= 1:
                for part in ("conv", "fc1", "fc2"):
                    c.conv(f"{dst}/conv2/{part}", f"{src}.conv2.{part}")
                c.bn(f"{dst}/conv2/bn0", f"{src}.conv2.bn0")
                c.bn(f"{dst}/conv2/bn1", f"{src}.conv2.bn1")
            else:
                c.conv(f"{dst}/conv2", f"{src}.conv2")
                c.bn(f"{dst}/bn2", f"{src}.bn2")
            c.conv(f"{dst}/conv3", f"{src}.conv3")
            c.bn(f"{dst}/bn3", f"{src}.bn3")
            # downsample.0 is the (parameter-free) average pool.
            if c.has(f"{src}.downsample.1.weight"):
                c.conv(f"{dst}/downsample_conv", f"{src}.downsample.1")
                c.bn(f"{dst}/downsample_bn", f"{src}.downsample.2")
    if model.num_classes > 0:
        c.dense("fc", "fc")
