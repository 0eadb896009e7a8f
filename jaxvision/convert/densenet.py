"""timm ``DenseNet`` state dicts -> :class:`jaxvision.models.densenet.DenseNet`.

Keys follow timm (``features.norm0`` is a ``BatchNormAct2d``; torchvision's densenets use
the same names for the convolutions and norms).  CIFAR models, which timm lacks, read the
same layout without the stem norm.
"""
from jaxvision.convert import register_converter


@register_converter("densenet*", "test_densenet")
def convert_densenet(c, model):
    f = "features"
    c.conv("conv0", f"{f}.conv0")
    if model.stem_type != "cifar":
        c.bn("norm0", f"{f}.norm0")
    if model.stem_type == "deep":
        for i in (1, 2):
            c.conv(f"conv{i}", f"{f}.conv{i}")
            c.bn(f"norm{i}", f"{f}.norm{i}")
    for i, n in enumerate(model.block_config):
        for j in range(n):
            src, dst = f"{f}.denseblock{i + 1}.denselayer{j + 1}", \
                f"denseblock{i + 1}_denselayer{j + 1}"
            for part in ("1", "2"):
                c.bn(f"{dst}/norm{part}", f"{src}.norm{part}")
                c.conv(f"{dst}/conv{part}", f"{src}.conv{part}")
        if i != len(model.block_config) - 1:
            c.bn(f"transition{i + 1}_norm", f"{f}.transition{i + 1}.norm")
            c.conv(f"transition{i + 1}_conv", f"{f}.transition{i + 1}.conv")
    c.bn("norm5", f"{f}.norm5")
    if model.num_classes > 0:
        c.dense("classifier", "classifier")
