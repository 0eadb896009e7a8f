"""timm ``ConvNeXt`` state dicts (patch stem, Linear MLP) -> Flax."""
from __future__ import annotations

from jaxvision.convert import Converter, register_converter


@register_converter("convnext_*", "test_convnext")
def convert_convnext(c: Converter, model):
    c.conv("stem_0", "stem.0")
    c.ln("stem_1", "stem.1")
    for si in range(len(model.depths)):
        if si > 0:
            c.ln(f"stages_{si}_downsample_0", f"stages.{si}.downsample.0")
            c.conv(f"stages_{si}_downsample_1", f"stages.{si}.downsample.1")
        for bi in range(model.depths[si]):
            t, f = f"stages.{si}.blocks.{bi}", f"stages_{si}_blocks_{bi}"
            c.conv(f"{f}/conv_dw", f"{t}.conv_dw")  # (C, 1, k, k) -> (k, k, 1, C)
            c.ln(f"{f}/norm", f"{t}.norm")
            c.dense(f"{f}/mlp_fc1", f"{t}.mlp.fc1")
            c.dense(f"{f}/mlp_fc2", f"{t}.mlp.fc2")
            if model.ls_init_value is not None:
                c.raw(f"params/{f}/gamma", f"{t}.gamma")
    c.ln("head_norm", "head.norm")
    if model.num_classes:
        c.dense("head_fc", "head.fc")
