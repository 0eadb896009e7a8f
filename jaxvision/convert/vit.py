"""timm ``VisionTransformer`` state dicts -> :class:`jaxvision.models.vit.VisionTransformer`.

timm's fused ``qkv`` Linear (3C, C) orders its outputs as (q|k|v, head, head_dim); the Flax
``qkv`` Dense splits its output the same way, so it converts with a plain transpose.
"""
from jaxvision.convert import register_converter


@register_converter("vit_*", "test_vit")
def convert_vit(c, model):
    c.conv("patch_embed", "patch_embed.proj")
    c.raw("params/pos_embed", "pos_embed")
    if model.class_token:
        c.raw("params/cls_token", "cls_token")
    for i in range(model.depth):
        src, dst = f"blocks.{i}", f"blocks_{i}"
        c.ln(f"{dst}/norm1", f"{src}.norm1")
        c.dense(f"{dst}/attn/qkv", f"{src}.attn.qkv")
        c.dense(f"{dst}/attn/proj", f"{src}.attn.proj")
        c.ln(f"{dst}/norm2", f"{src}.norm2")
        c.dense(f"{dst}/mlp/fc1", f"{src}.mlp.fc1")
        c.dense(f"{dst}/mlp/fc2", f"{src}.mlp.fc2")
    use_fc_norm = model.global_pool != "token" if model.fc_norm is None else model.fc_norm
    final = "fc_norm" if use_fc_norm else "norm"
    c.ln(final, final)
    if model.num_classes > 0:
        c.dense("head", "head")
