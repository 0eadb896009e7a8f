"""Transformer pieces shared by the Vision Transformer and MLP-Mixer families.

* :class:`Attention`: multi-head self-attention (Vaswani et al., 2017) with a fused
  ``qkv`` projection laid out like timm's, computed by ``jax.nn.dot_product_attention``.
  That function runs XLA's unfused attention unless told which kernel to use;
  :func:`attention_impl` asks for cuDNN's fused (flash) attention on GPUs that have it,
  for bfloat16/float16 inputs, as timm/PyTorch do through ``scaled_dot_product_attention``.
  ``JAXVISION_ATTENTION_IMPL`` (``auto`` | ``xla`` | ``cudnn``) overrides the choice.
* :class:`Mlp`: two dense layers with an exact (erf) GELU in between.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import kernels

ATTENTION_ENV_VAR = kernels.ATTENTION_ENV_VAR
ATTENTION_IMPLS = kernels.ATTENTION_IMPLS

# timm initialises ViT linear layers with trunc_normal_(std=.02) and zero bias.
dense_init = nn.initializers.truncated_normal(0.02)


class Mlp(nn.Module):
    """Position-wise feed-forward network: Dense -> GELU (erf) -> Dropout -> Dense -> Dropout.

    The submodule names ``fc1``/``fc2`` follow timm's ``Mlp``.
    """

    hidden_features: int
    out_features: int | None = None
    dropout_rate: float = 0.0
    kernel_init: Any = dense_init
    bias_init: Any = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        out = self.out_features or x.shape[-1]
        x = nn.Dense(self.hidden_features, kernel_init=self.kernel_init,
                     bias_init=self.bias_init, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)  # torch's nn.GELU default is the exact erf form
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(out, kernel_init=self.kernel_init, bias_init=self.bias_init,
                     dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al., 2017) over tokens ``(B, N, C)``.

    ``qkv`` is one Dense of width ``3 * C`` whose output splits as ``(3, heads, head_dim)``,
    the layout of timm's fused ``qkv`` Linear, so converted weights need only a transpose.
    The attention itself is ``jax.nn.dot_product_attention`` (scale ``head_dim ** -0.5``),
    with the kernel :func:`attention_impl` picks (cuDNN's fused one on recent GPUs for
    16-bit inputs, XLA's elsewhere).  Only when attention
    dropout is active in training are the weights formed explicitly, since the fused call
    has no dropout on the attention matrix.
    """

    num_heads: int
    qkv_bias: bool = True
    attn_dropout_rate: float = 0.0
    proj_dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        b, n, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"embedding dim {c} is not divisible by num_heads={self.num_heads}")
        head_dim = c // self.num_heads
        qkv = nn.Dense(3 * c, use_bias=self.qkv_bias, kernel_init=dense_init, dtype=self.dtype,
                       name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, heads, head_dim)
        if train and self.attn_dropout_rate > 0.0:
            x = explicit_attention(q, k, v, dropout_rate=self.attn_dropout_rate,
                                   dropout_rng=self.make_rng("dropout"))
        else:
            x = fused_attention(q, k, v)
        x = x.reshape(b, n, c)
        x = nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="proj")(x)
        return nn.Dropout(self.proj_dropout_rate, deterministic=not train)(x)


def requested_attention_impl() -> str:
    """The kernel asked for now, at trace time: ``jaxvision.kernels.use``'s or a run's
    ``config.kernels.attention``, else ``JAXVISION_ATTENTION_IMPL``, else ``'auto'``."""
    return kernels.attention()


def attention_impl(q) -> str:
    """Kernel for ``jax.nn.dot_product_attention`` on queries ``q`` (B, N, heads, head_dim).

    ``JAXVISION_ATTENTION_IMPL`` (read at trace time) forces ``xla`` or ``cudnn``; ``auto``
    (the default) picks ``cudnn`` where its fused kernel applies -- a CUDA GPU of compute
    capability 8.0 or newer, bfloat16/float16 inputs, a head size that is a multiple of 8 up
    to 128 -- and ``xla`` everywhere else (CPU, TPU, float32).
    """
    impl = requested_attention_impl()
    if impl != "auto":
        return impl
    if jax.default_backend() != "gpu":
        return "xla"
    if jnp.dtype(q.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "xla"
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > 128:
        return "xla"
    try:
        capability = float(getattr(jax.devices()[0], "compute_capability", "0"))
    except (TypeError, ValueError):
        capability = 0.0
    return "cudnn" if capability >= 8.0 else "xla"


def cudnn_attention(q, k, v):
    """cuDNN's fused attention.  Its training kernels refuse an odd number of tokens (ViT's
    197 = 196 patches + class token); then the token axis is padded by one and the padded
    key is masked out through the sequence lengths, which leaves the result unchanged."""
    n = q.shape[1]
    try:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    except NotImplementedError:
        if n % 2 == 0:
            raise
    pad = ((0, 0), (0, 1), (0, 0), (0, 0))
    lengths = jnp.full((q.shape[0],), n, jnp.int32)
    out = jax.nn.dot_product_attention(
        jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad), implementation="cudnn",
        query_seq_lengths=lengths, key_value_seq_lengths=lengths)
    return out[:, :n]


def fused_attention(q, k, v):
    """``jax.nn.dot_product_attention`` with the kernel :func:`attention_impl` picks.  When
    ``auto`` picked cuDNN and JAX finds at trace time that the shapes or the installed cuDNN
    do not support it, XLA's attention is used instead; an explicit ``cudnn`` is not undone."""
    impl = attention_impl(q)
    if impl != "cudnn":
        return jax.nn.dot_product_attention(q, k, v, implementation=impl)
    if requested_attention_impl() != "auto":
        return cudnn_attention(q, k, v)
    try:
        return cudnn_attention(q, k, v)
    except (NotImplementedError, RuntimeError):
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def explicit_attention(q, k, v, *, dropout_rate: float = 0.0, dropout_rng=None):
    """softmax(q k^T / sqrt(d)) v with optional dropout on the attention weights.

    Same ``(B, N, heads, head_dim)`` layout and result as ``jax.nn.dot_product_attention``;
    used where dropout on the attention matrix is needed, and as a reference in tests.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    # softmax in at least float32 even for low-precision compute, as the fused kernels do.
    wide = jnp.promote_types(logits.dtype, jnp.float32)
    weights = jax.nn.softmax(logits.astype(wide), axis=-1).astype(q.dtype)
    if dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), jnp.zeros_like(weights))
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


__all__ = ["Attention", "Mlp", "attention_impl", "cudnn_attention", "dense_init",
           "explicit_attention", "fused_attention", "requested_attention_impl"]
