"""MLP-Mixer (Tolstikhin et al., 2021), laid out like timm's ``MlpMixer``.

Patches are embedded as in ViT (a convolution with kernel = stride = patch, no class token,
no position embeddings).  Each Mixer block applies two pre-norm residual MLPs:

    U = X + W2 GELU(W1 LN(X)^T)^T        token mixing: across the S patches, per channel
    Y = U + W4 GELU(W3 LN(U))            channel mixing: across the C channels, per patch

with hidden widths ``mlp_ratio = (0.5, 4.0)`` times C (timm's choice; the paper's D_S, D_C).
A final LayerNorm, global average pooling over patches and a linear head follow.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.layers.attention_vit import Mlp
from jaxvision.layers.conv import Conv, tuple2
from jaxvision.layers.drop import DropPath
from jaxvision.layers.head import classifier_head
from jaxvision.registry import INCEPTION_MEAN, INCEPTION_STD, register_model

# The paper's code (and timm's Mixer init) uses Xavier-uniform dense kernels.  timm also
# zero-initialises the classifier, which we do not: a zero head passes no gradient to the rest
# of the network on the first step.
xavier = nn.initializers.xavier_uniform()


class MixerBlock(nn.Module):
    """Token-mixing MLP then channel-mixing MLP, each pre-norm and residual."""

    mlp_ratio: Any = (0.5, 4.0)  # (token-mixing, channel-mixing) multiples of C, or one float
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        seq_len, dim = x.shape[1], x.shape[2]
        ratios = self.mlp_ratio
        if isinstance(ratios, (int, float)):  # one ratio for both MLPs, as timm's to_2tuple
            ratios = (ratios, ratios)
        tokens_dim, channels_dim = (int(r * dim) for r in ratios)
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)  # noqa: E731
        # timm's Mixer init draws the MLP biases from N(0, 1e-6).
        mlp = lambda hidden, out, name: Mlp(  # noqa: E731
            hidden, out, dropout_rate=self.dropout_rate, kernel_init=xavier,
            bias_init=nn.initializers.normal(1e-6), dtype=self.dtype, name=name)
        # The scope name decides the 'dropout' masks drawn: kept so seeded runs reproduce.
        drop_path = DropPath(self.drop_path_rate, name="_DropPath_0")

        y = norm("norm1")(x).swapaxes(1, 2)  # (B, C, S): mix along the patch axis
        y = mlp(tokens_dim, seq_len, "mlp_tokens")(y, train=train).swapaxes(1, 2)
        x = x + drop_path(y, deterministic=not train)
        y = mlp(channels_dim, dim, "mlp_channels")(norm("norm2")(x), train=train)
        return x + drop_path(y, deterministic=not train)


class MlpMixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al., 2021); parameters named like timm's.

    Attributes:
      img_size: input resolution; the token-mixing MLPs are sized for its patch count.
      num_blocks, embed_dim, patch_size: the paper's depth, hidden size C and patch size.
      global_pool: 'avg' (the paper's) or '' (no pooling: ``num_classes=0`` then returns the
        normalised tokens (B, S, C)).
      drop_rate: dropout before the head; proj_drop_rate: inside the MLPs; drop_path_rate:
        stochastic depth, the same for every block as in timm.
    """

    num_classes: int = 1000
    img_size: Any = 224
    patch_size: Any = 16
    num_blocks: int = 8
    embed_dim: int = 512
    mlp_ratio: Any = (0.5, 4.0)
    stem_norm: bool = False
    global_pool: str = "avg"
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"expected NHWC images (B, H, W, C), got shape {x.shape}")
        if self.global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {self.global_pool!r}")
        (ih, iw), (ph, pw) = tuple2(self.img_size), tuple2(self.patch_size)
        if tuple(x.shape[1:3]) != (ih, iw):
            # The token-mixing weights are (patches x hidden): they fix the input size.
            raise ValueError(f"input size {tuple(x.shape[1:3])} differs from the model's "
                             f"img_size {(ih, iw)}; build the model with img_size={x.shape[1:3]}")
        if ih < ph or iw < pw:
            raise ValueError(f"img_size {(ih, iw)} is smaller than patch_size {(ph, pw)}")
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)  # noqa: E731

        x = Conv(self.embed_dim, (ph, pw), strides=(ph, pw), padding="VALID",
                 kernel_init=nn.initializers.lecun_normal(), dtype=self.dtype, name="stem")(x)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)  # (B, S, C), row-major over the patch grid
        if self.stem_norm:
            x = norm("stem_norm")(x)
        for i in range(self.num_blocks):
            x = MixerBlock(self.mlp_ratio, dropout_rate=self.proj_drop_rate,
                           drop_path_rate=self.drop_path_rate, dtype=self.dtype,
                           name=f"blocks_{i}")(x, train=train)
        x = norm("norm")(x)
        if self.global_pool == "avg":
            x = x.mean(axis=1)
        return classifier_head(x, self.num_classes, name="head", train=train,
                               drop_rate=self.drop_rate, dtype=self.dtype, kernel_init=xavier)


# ---------------------------------------------------------------------------------------------
# Named variants as timm registers them (the paper's Table 1: S 512/8, B 768/12, L 1024/24).

_CFG = dict(input_size=(224, 224, 3), mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.875)


def _mixer(patch: int, blocks: int, dim: int, kwargs) -> MlpMixer:
    return MlpMixer(**{"patch_size": patch, "num_blocks": blocks, "embed_dim": dim, **kwargs})


@register_model(**_CFG)
def mixer_s32_224(**kwargs):
    return _mixer(32, 8, 512, kwargs)


@register_model(**_CFG)
def mixer_s16_224(**kwargs):
    return _mixer(16, 8, 512, kwargs)


@register_model(**_CFG)
def mixer_b32_224(**kwargs):
    return _mixer(32, 12, 768, kwargs)


@register_model(**_CFG)
def mixer_b16_224(**kwargs):
    return _mixer(16, 12, 768, kwargs)


@register_model(**_CFG)
def mixer_l32_224(**kwargs):
    return _mixer(32, 24, 1024, kwargs)


@register_model(**_CFG)
def mixer_l16_224(**kwargs):
    return _mixer(16, 24, 1024, kwargs)


@register_model(input_size=(32, 32, 3), num_classes=10, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                crop_pct=1.0)
def test_mixer(**kwargs):
    return _mixer(8, 2, 32, {"img_size": 32, "num_classes": 10, **kwargs})


__all__ = ["MixerBlock", "MlpMixer"]
