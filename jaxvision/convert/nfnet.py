"""timm ``NormFreeNet`` state dicts (NF-ResNets, NFNet-F, DeepMind NFNet-F) -> Flax."""
from __future__ import annotations

from jaxvision.convert import Converter, register_converter


def std_conv(c: Converter, path: str, prefix: str):
    """timm ScaledStdConv2d(Same): weight (O, I/g, kh, kw), bias (O,), gain (O, 1, 1, 1)."""
    c.conv(path, prefix, bias=True)
    c.raw(f"params/{path}/gain", f"{prefix}.gain", lambda g: g.reshape(-1))


@register_converter("nf_resnet*", "nfnet_*", "dm_nfnet_*", "test_nf_resnet", "test_nfnet")
def convert_nfnet(c: Converter, model):
    for key in sorted({k.split(".")[1] for k in c.keys("stem.") if k.endswith(".weight")}):
        std_conv(c, f"stem_{key}", f"stem.{key}")  # 'conv' or 'conv1'..'conv4'
    blocks = sorted({tuple(int(i) for i in k.split(".")[1:3]) for k in c.keys("stages.")})
    for si, bi in blocks:
        t, f = f"stages.{si}.{bi}", f"stages_{si}_{bi}"
        for conv in ("conv1", "conv2", "conv2b", "conv3", "downsample.conv"):
            if c.has(f"{t}.{conv}.weight"):
                std_conv(c, f"{f}/{conv.replace('.', '_')}", f"{t}.{conv}")
        if c.has(f"{t}.attn_last.fc1.weight"):
            c.conv(f"{f}/attn_last/fc1", f"{t}.attn_last.fc1")
            c.conv(f"{f}/attn_last/fc2", f"{t}.attn_last.fc2")
        if c.has(f"{t}.skipinit_gain"):
            c.raw(f"params/{f}/skipinit_gain", f"{t}.skipinit_gain")
    if c.has("final_conv.weight"):
        std_conv(c, "final_conv", "final_conv")
    if getattr(model, "num_classes", 0):
        c.dense("head_fc", "head.fc")
