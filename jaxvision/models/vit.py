"""Vision Transformer (Dosovitskiy et al., 2021), laid out like timm's ``VisionTransformer``.

An image is cut into non-overlapping ``patch x patch`` patches (a convolution with
kernel = stride = patch), each linearly embedded; a learned class token is prepended and
learned position embeddings are added.  ``depth`` pre-norm Transformer encoder blocks follow:

    z' = MSA(LN(z)) + z,        z = MLP(LN(z')) + z'

and the class token (``global_pool='token'``) or the mean of the patch tokens
(``global_pool='avg'``) feeds a linear classifier.  LayerNorm eps is 1e-6 and GELU the exact
(erf) form, both as in the paper's code and timm.

The position embeddings are tied to the grid of the ``img_size`` a model is built for.  To
run at another resolution, build the model with the new ``img_size`` and resample the
variables with :func:`resample_pos_embed` (the fine-tuning recipe of the paper, Sec. 3.2),
or set ``dynamic_img_size=True`` to resample on every call.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.layers.attention_vit import Attention, Mlp, dense_init
from jaxvision.layers.conv import Conv, tuple2
from jaxvision.layers.drop import DropPath
from jaxvision.layers.head import classifier_head
from jaxvision.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    register_model,
)

POOL_TYPES = ("token", "avg", "max", "avgmax")

_INTERPOLATION = {"bicubic": "cubic", "bilinear": "linear"}


def resample_abs_pos_embed(posemb, new_size: Sequence[int], old_size: Sequence[int] | None = None,
                           num_prefix_tokens: int = 1, interpolation: str = "bicubic",
                           antialias: bool = True):
    """Resample absolute position embeddings ``(1, prefix + H*W, C)`` to a new ``H' x W'`` grid.

    Matches ``timm.layers.resample_abs_pos_embed``: the prefix (class) token embeddings are
    kept, the grid part is interpolated as an image.  ``interpolation='bicubic'`` with
    ``antialias=True`` (timm's default) uses the Keys a=-0.5 cubic with truncated, renormalised
    taps at the borders, as torch's anti-aliased bicubic; ``'bilinear'`` is torch's bilinear
    (``align_corners=False``) with or without anti-aliasing.
    """
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, "
                         f"got {interpolation!r}")
    if interpolation == "bicubic" and not antialias:
        # torch's non-antialiased bicubic uses a=-0.75 and clamps border taps; not provided.
        raise ValueError("bicubic resampling is only available with antialias=True "
                         "(timm's default); use interpolation='bilinear' otherwise")
    posemb = jnp.asarray(posemb)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(f"position embeddings must have shape (1, tokens, dim), "
                         f"got {posemb.shape}")
    new_size = tuple2(new_size)
    n_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            raise ValueError(f"{n_grid} grid position embeddings do not form a square grid; "
                             "pass old_size=(H, W)")
        old_size = (side, side)
    old_size = tuple2(old_size)
    if old_size[0] * old_size[1] != n_grid:
        raise ValueError(f"old grid {old_size} has {old_size[0] * old_size[1]} positions but the "
                         f"embeddings hold {n_grid} (after {num_prefix_tokens} prefix tokens)")
    if tuple(old_size) == tuple(new_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = posemb.shape[-1]
    grid = grid.reshape(old_size[0], old_size[1], dim).astype(jnp.float32)
    grid = jax.image.resize(grid, (*new_size, dim), method=_INTERPOLATION[interpolation],
                            antialias=antialias)
    grid = grid.reshape(1, new_size[0] * new_size[1], dim).astype(posemb.dtype)
    return jnp.concatenate([prefix, grid], axis=1)


def resample_pos_embed(variables, new_grid: Sequence[int], old_grid: Sequence[int] | None = None,
                       interpolation: str = "bicubic", antialias: bool = True):
    """Variables of a ViT with its ``params/pos_embed`` resampled to a ``new_grid`` (H, W).

    Use with a model built for ``img_size = new_grid * patch_size``; e.g. 224 -> 384 with
    patch 16 is ``resample_pos_embed(variables, (24, 24))``.  The class-token embedding (present
    when the variables hold a ``cls_token``) is left untouched.  Returns a new dict; the input
    is not modified.
    """
    if "params" not in variables or "pos_embed" not in variables["params"]:
        raise ValueError("variables have no 'params/pos_embed' entry; are they a ViT's?")
    params = dict(variables["params"])
    prefix = 1 if "cls_token" in params else 0
    params["pos_embed"] = resample_abs_pos_embed(params["pos_embed"], new_grid, old_grid,
                                                 num_prefix_tokens=prefix,
                                                 interpolation=interpolation,
                                                 antialias=antialias)
    return {**variables, "params": params}


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``."""

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    proj_dropout_rate: float = 0.0
    attn_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        dim = x.shape[-1]
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)  # noqa: E731
        # The scope name decides the 'dropout' masks drawn: kept so seeded runs reproduce.
        drop_path = DropPath(self.drop_path_rate, name="_DropPath_0")
        y = Attention(self.num_heads, qkv_bias=self.qkv_bias,
                      attn_dropout_rate=self.attn_dropout_rate,
                      proj_dropout_rate=self.proj_dropout_rate, dtype=self.dtype,
                      name="attn")(norm("norm1")(x), train=train)
        x = x + drop_path(y, deterministic=not train)
        y = Mlp(int(dim * self.mlp_ratio), dropout_rate=self.proj_dropout_rate, dtype=self.dtype,
                name="mlp")(norm("norm2")(x), train=train)
        return x + drop_path(y, deterministic=not train)


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2021); parameters named like timm's.

    Attributes:
      img_size: input resolution the position embeddings are built for (int or (H, W)).
      patch_size: side of the square patches (int or (h, w)).
      global_pool: 'token' (class token, the paper's choice), 'avg' (mean of patch tokens),
        'max' or 'avgmax'.
      fc_norm: normalise after pooling instead of before; ``None`` means "when not 'token'"
        as in timm.
      drop_rate: dropout before the head; pos_drop_rate: after adding position embeddings;
      proj_drop_rate: in MLPs and after the attention projection; attn_drop_rate: on the
        attention weights; drop_path_rate: stochastic depth, rising linearly from 0 at the
        first block to this value at the last.
      dynamic_img_size: accept any input size divisible by the patch, resampling the position
        embeddings (bicubic) on every call.
    """

    num_classes: int = 1000
    img_size: Any = 224
    patch_size: Any = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    global_pool: str = "token"
    fc_norm: bool | None = None
    drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dynamic_img_size: bool = False
    dtype: Any = jnp.float32

    def grid_size(self) -> tuple[int, int]:
        """(H, W) of the patch grid at ``img_size``."""
        (ih, iw), (ph, pw) = tuple2(self.img_size), tuple2(self.patch_size)
        return ih // ph, iw // pw

    def _check(self, x):
        if x.ndim != 4:
            raise ValueError(f"expected NHWC images (B, H, W, C), got shape {x.shape}")
        if self.global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        (ih, iw), (ph, pw) = tuple2(self.img_size), tuple2(self.patch_size)
        if ih < ph or iw < pw:
            raise ValueError(f"img_size {(ih, iw)} is smaller than patch_size {(ph, pw)}")
        h, w = x.shape[1:3]
        if self.dynamic_img_size:
            if h % ph or w % pw:
                raise ValueError(f"input {(h, w)} is not divisible by patch_size {(ph, pw)}")
        elif (h, w) != (ih, iw):
            raise ValueError(
                f"input size {(h, w)} differs from the model's img_size {(ih, iw)}: build the "
                f"model with img_size={(h, w)} and resample the position embeddings with "
                "jaxvision.models.vit.resample_pos_embed, or set dynamic_img_size=True")

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        self._check(x)
        ph, pw = tuple2(self.patch_size)
        d = self.embed_dim
        n_prefix = 1 if self.class_token else 0
        grid = self.grid_size()

        # Patch embedding: kernel = stride = patch, so every patch is embedded independently.
        x = Conv(d, (ph, pw), strides=(ph, pw), padding="VALID",
                 kernel_init=nn.initializers.lecun_normal(), dtype=self.dtype,
                 name="patch_embed")(x)
        b, gh, gw, _ = x.shape
        x = x.reshape(b, gh * gw, d)  # row-major over the grid, as torch's flatten(2)

        pos = self.param("pos_embed", nn.initializers.truncated_normal(0.02),
                         (1, grid[0] * grid[1] + n_prefix, d))
        if (gh, gw) != grid:  # only reachable with dynamic_img_size
            pos = resample_abs_pos_embed(pos, (gh, gw), grid, num_prefix_tokens=n_prefix)
        if self.class_token:
            cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
        x = x + pos.astype(x.dtype)
        x = nn.Dropout(self.pos_drop_rate, deterministic=not train)(x)

        # Stochastic depth rises linearly with depth (timm's calculate_drop_path_rates).
        dpr = np.linspace(0.0, self.drop_path_rate, self.depth) if self.depth else []
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                             proj_dropout_rate=self.proj_drop_rate,
                             attn_dropout_rate=self.attn_drop_rate,
                             drop_path_rate=float(dpr[i]), dtype=self.dtype,
                             name=f"blocks_{i}")(x, train=train)

        use_fc_norm = self.global_pool != "token" if self.fc_norm is None else self.fc_norm
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)  # noqa: E731
        if not use_fc_norm:
            x = norm("norm")(x)
        if self.global_pool == "token":
            x = x[:, 0]
        else:
            tokens = x[:, n_prefix:]
            if self.global_pool == "avg":
                x = tokens.mean(axis=1)
            elif self.global_pool == "max":
                x = tokens.max(axis=1)
            else:  # avgmax
                x = 0.5 * (tokens.max(axis=1) + tokens.mean(axis=1))
        if use_fc_norm:
            x = norm("fc_norm")(x)
        return classifier_head(x, self.num_classes, name="head", train=train,
                               drop_rate=self.drop_rate, dtype=self.dtype, kernel_init=dense_init)


# ---------------------------------------------------------------------------------------------
# Named variants, as timm registers them.  Widths/depths/heads: Ti 192/12/3, S 384/12/6,
# B 768/12/12, L 1024/24/16, H 1280/32/16 (the paper's Table 1; Ti and S from Steiner et al.).

_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
_H = dict(embed_dim=1280, depth=32, num_heads=16)

# timm's default pretrained cfgs: Inception-style normalisation, crop 0.9 at 224, 1.0 at 384.
_CFG_224 = dict(input_size=(224, 224, 3), mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.9)
_CFG_384 = dict(input_size=(384, 384, 3), mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=1.0)


def _vit(size: dict, patch: int, img: int, kwargs) -> VisionTransformer:
    # Caller keywords override the variant's defaults (e.g. img_size=64 for a quick test).
    return VisionTransformer(**{**size, "patch_size": patch, "img_size": img, **kwargs})


@register_model(**_CFG_224)
def vit_tiny_patch16_224(**kwargs):
    return _vit(_TI, 16, 224, kwargs)


@register_model(**_CFG_384)
def vit_tiny_patch16_384(**kwargs):
    return _vit(_TI, 16, 384, kwargs)


@register_model(**_CFG_224)
def vit_small_patch32_224(**kwargs):
    return _vit(_S, 32, 224, kwargs)


@register_model(**_CFG_384)
def vit_small_patch32_384(**kwargs):
    return _vit(_S, 32, 384, kwargs)


@register_model(**_CFG_224)
def vit_small_patch16_224(**kwargs):
    return _vit(_S, 16, 224, kwargs)


@register_model(**_CFG_384)
def vit_small_patch16_384(**kwargs):
    return _vit(_S, 16, 384, kwargs)


# timm's default weights for S/8 are DINO's, normalised with the ImageNet statistics.
@register_model(input_size=(224, 224, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.9)
def vit_small_patch8_224(**kwargs):
    return _vit(_S, 8, 224, kwargs)


@register_model(**_CFG_224)
def vit_base_patch32_224(**kwargs):
    return _vit(_B, 32, 224, kwargs)


@register_model(**_CFG_384)
def vit_base_patch32_384(**kwargs):
    return _vit(_B, 32, 384, kwargs)


@register_model(**_CFG_224)
def vit_base_patch16_224(**kwargs):
    return _vit(_B, 16, 224, kwargs)


@register_model(**_CFG_384)
def vit_base_patch16_384(**kwargs):
    return _vit(_B, 16, 384, kwargs)


@register_model(**_CFG_224)
def vit_base_patch8_224(**kwargs):
    return _vit(_B, 8, 224, kwargs)


@register_model(**_CFG_224)
def vit_large_patch32_224(**kwargs):
    return _vit(_L, 32, 224, kwargs)


@register_model(**_CFG_384)
def vit_large_patch32_384(**kwargs):
    return _vit(_L, 32, 384, kwargs)


@register_model(**_CFG_224)
def vit_large_patch16_224(**kwargs):
    return _vit(_L, 16, 224, kwargs)


@register_model(**_CFG_384)
def vit_large_patch16_384(**kwargs):
    return _vit(_L, 16, 384, kwargs)


@register_model(**_CFG_224)
def vit_large_patch14_224(**kwargs):
    return _vit(_L, 14, 224, kwargs)


@register_model(**_CFG_224)
def vit_huge_patch14_224(**kwargs):
    return _vit(_H, 14, 224, kwargs)


@register_model(input_size=(32, 32, 3), num_classes=10, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                crop_pct=1.0)
def test_vit(**kwargs):
    return _vit(dict(embed_dim=32, depth=2, num_heads=2, num_classes=10), 8, 32, kwargs)


__all__ = ["EncoderBlock", "VisionTransformer", "resample_abs_pos_embed", "resample_pos_embed"]
