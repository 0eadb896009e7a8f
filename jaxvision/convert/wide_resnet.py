"""State dicts of :func:`jaxvision.reference_torch.create_torch_model` for the CIFAR Wide
ResNets (``wrn*``) -> :class:`jaxvision.models.wide_resnet.WideResNet`.

Neither timm nor torchvision has these networks; the PyTorch version in
:mod:`jaxvision.reference_torch` (the authors' block design, module names mirroring the
Flax paths) defines the key layout.
"""
from jaxvision.convert import register_converter
from jaxvision.models.wide_resnet import block_layout


@register_converter("wrn*", "test_wrn*")
def convert_wide_resnet(c, model):
    c.conv("conv1", "conv1")
    for b, cin, w, stride in block_layout(model):
        for k in range(1, len(model.block_type) + 1):
            c.bn(f"{b}/bn{k}", f"{b}.bn{k}")
            c.conv(f"{b}/conv{k}", f"{b}.conv{k}")
        if stride != 1 or cin != w:  # the block's projection shortcut
            c.conv(f"{b}/shortcut", f"{b}.shortcut")
    c.bn("bn", "bn")
    if model.num_classes:
        c.dense("fc", "fc")
