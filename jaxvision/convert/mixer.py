"""timm ``MlpMixer`` state dicts -> :class:`jaxvision.models.mlp_mixer.MlpMixer`."""
from jaxvision.convert import register_converter


@register_converter("mixer_*", "test_mixer")
def convert_mixer(c, model):
    c.conv("stem", "stem.proj")
    if model.stem_norm:
        c.ln("stem_norm", "stem.norm")
    for i in range(model.num_blocks):
        src, dst = f"blocks.{i}", f"blocks_{i}"
        c.ln(f"{dst}/norm1", f"{src}.norm1")
        c.ln(f"{dst}/norm2", f"{src}.norm2")
        for mlp in ("mlp_tokens", "mlp_channels"):
            c.dense(f"{dst}/{mlp}/fc1", f"{src}.{mlp}.fc1")
            c.dense(f"{dst}/{mlp}/fc2", f"{src}.{mlp}.fc2")
    c.ln("norm", "norm")
    if model.num_classes > 0:
        c.dense("head", "head")
