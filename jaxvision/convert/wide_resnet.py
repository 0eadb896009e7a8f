"""State dicts of :func:`jaxvision.reference_torch.create_torch_model` for the CIFAR Wide
ResNets (``wrn*``) -> :class:`jaxvision.models.wide_resnet.WideResNet`.

Neither timm nor torchvision has these networks; the PyTorch version in
:mod:`jaxvision.reference_torch` (the authors' block design, module names mirroring the
Flax paths) defines the key layout.
"""
from jaxvision.convert import register_converter
from jaxvision.models.wide_resnet import blocks_per_stage


@register_converter("wrn*", "test_wrn*")
def convert_wide_resnet(c, model):
    c.conv("conv1", "conv1")
    n = blocks_per_stage(model.depth)
    widths = model.widths or tuple(w * model.widen_factor for w in (16, 32, 64))
    cin = model.stem_width
    for i, w in enumerate(widths):
        for j in range(n):
            b = f"block{i + 1}_{j}"
            for k in range(1, len(model.block_type) + 1):
                c.bn(f"{b}/bn{k}", f"{b}.bn{k}")
                c.conv(f"{b}/conv{k}", f"{b}.conv{k}")
            if (i > 0 and j == 0) or cin != w:
                c.conv(f"{b}/shortcut", f"{b}.shortcut")
            cin = w
    c.bn("bn", "bn")
    if model.num_classes:
        c.dense("fc", "fc")
