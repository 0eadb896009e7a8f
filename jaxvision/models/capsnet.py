"""CapsNet with dynamic routing between capsules (Sabour et al., 2017).

Conv1 (256, 9x9, ReLU) -> PrimaryCaps (32 channels of 8-D capsules, 9x9 stride 2, squashed)
-> DigitCaps (one 16-D capsule per class, dynamic routing) -> capsule lengths.  The
lengths ``||v_j||`` are returned as the logits; train them with :func:`margin_loss`.

A decoder (FC 512 ReLU, FC 1024 ReLU, FC H*W*C sigmoid) reconstructs the input from the
DigitCaps outputs with all but one capsule masked out: in training the true class
(``targets``, soft labels (B, K) as the trainer passes them), otherwise the longest
capsule.  Its loss, ``0.0005 * sum of squared errors`` per image averaged over the batch,
is sown as ``losses/reconstruction``; the reconstruction itself is sown as
``intermediates/reconstruction``.  The decoder compares against the raw input, so the
model's data contract is intensities in [0, 1] (mean 0, std 1).

At 28x28x1 the parameter count is 8,215,568, the paper's 8.2M: conv1 20,992, primary
caps 5,308,672, the routing weights W_ij 1152 x 10 x 8 x 16 = 1,474,560, decoder 1,411,344.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import losses
from jaxvision.layers import Conv, pad
from jaxvision.registry import register_model

_EPS = 1e-7


def squash(s: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """``v = ||s||^2 / (1 + ||s||^2) * s / ||s||`` (eq. 1): short vectors shrink to ~0,
    long ones to just below unit length.  A small epsilon keeps the gradient finite at 0."""
    sq = jnp.sum(jnp.square(s), axis=axis, keepdims=True)
    return s * (sq / (1.0 + sq)) / jnp.sqrt(sq + _EPS)


def safe_norm(v: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """Euclidean length with a finite gradient at zero."""
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axis) + _EPS)


def dynamic_routing(u_hat: jnp.ndarray, num_iterations: int = 3) -> jnp.ndarray:
    """Routing by agreement (Procedure 1).

    Args:
      u_hat: ``(B, I, J, D)`` predictions ``u_hat_{j|i}`` of the I lower capsules for the
        J upper capsules.
      num_iterations: ``r``.

    Returns:
      ``(B, J, D)`` upper capsule outputs ``v_j``.
    """
    if u_hat.ndim != 4:
        raise ValueError(f"dynamic_routing expects u_hat (B, I, J, D), got {u_hat.shape}")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    b = jnp.zeros(u_hat.shape[:3], u_hat.dtype)  # logits b_ij, (B, I, J)
    v = None
    for it in range(num_iterations):
        # Each lower capsule i distributes itself over the capsules of the layer above.
        c = jax.nn.softmax(b, axis=2)
        s = jnp.einsum("bij,bijd->bjd", c, u_hat)
        v = squash(s)
        if it + 1 < num_iterations:  # the final update of b would not be used
            b = b + jnp.einsum("bijd,bjd->bij", u_hat, v)
    return v


def margin_loss(lengths: jnp.ndarray, targets: jnp.ndarray, m_plus: float = 0.9,
                m_minus: float = 0.1, lam: float = 0.5) -> jnp.ndarray:
    """Margin loss (eq. 4): ``sum_k T_k max(0, m+ - ||v_k||)^2
    + lam (1 - T_k) max(0, ||v_k|| - m-)^2``, summed over classes, mean over the batch.

    ``targets`` are integer labels ``(B,)`` or (soft) one-hot ``(B, K)``.
    """
    if targets.ndim == lengths.ndim - 1 and jnp.issubdtype(targets.dtype, jnp.integer):
        targets = jax.nn.one_hot(targets, lengths.shape[-1], dtype=lengths.dtype)
    if targets.shape != lengths.shape:
        raise ValueError(f"margin_loss: targets {targets.shape} do not match lengths "
                         f"{lengths.shape} (give integer labels (B,) or one-hot (B, K))")
    return jnp.mean(losses.margin_loss(lengths, targets, m_plus, m_minus, lam))


class DigitCaps(nn.Module):
    """Fully connected capsule layer: ``u_hat_{j|i} = W_ij u_i`` then dynamic routing.

    ``W`` has shape ``(I, J, D_in, D_out)`` (one matrix per pair), no bias, as the paper.
    """

    num_caps: int = 10
    caps_dim: int = 16
    num_iterations: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u):
        _, num_in, dim_in = u.shape
        w = self.param("kernel", nn.initializers.normal(0.01),
                       (num_in, self.num_caps, dim_in, self.caps_dim))
        u_hat = jnp.einsum("bid,ijde->bije", u.astype(self.dtype), w.astype(self.dtype))
        return dynamic_routing(u_hat, self.num_iterations)


class CapsNet(nn.Module):
    """CapsNet (Sabour et al., 2017); see the module docstring."""

    num_classes: int = 10
    conv1_features: int = 256
    conv1_kernel: int = 9
    primary_caps: int = 32
    primary_dim: int = 8
    primary_kernel: int = 9
    primary_stride: int = 2
    digit_dim: int = 16
    routing_iterations: int = 3
    decoder_hidden: Sequence[int] = (512, 1024)
    reconstruction_weight: float = 0.0005
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False, targets: Optional[jnp.ndarray] = None):
        if x.ndim != 4:
            raise ValueError(f"CapsNet expects NHWC images, got shape {x.shape}")
        if self.num_classes == 0:
            raise ValueError("CapsNet has one capsule per class: num_classes must be > 0")
        bsz = x.shape[0]
        k1, kp = self.conv1_kernel, self.primary_kernel
        h = nn.relu(Conv(self.conv1_features, (k1, k1), padding=pad(0), dtype=self.dtype,
                         name="conv1")(x))
        # PrimaryCaps: one convolution giving primary_caps * primary_dim channels, read as
        # primary_caps capsule types of primary_dim dimensions at every position.
        h = Conv(self.primary_caps * self.primary_dim, (kp, kp),
                 strides=(self.primary_stride, self.primary_stride), padding=pad(0),
                 dtype=self.dtype, name="primary_caps")(h)
        u = squash(h.reshape(bsz, -1, self.primary_dim))  # (B, 6*6*32, 8) at 28x28
        v = DigitCaps(self.num_classes, self.digit_dim, self.routing_iterations,
                      dtype=self.dtype, name="digit_caps")(u)  # (B, K, 16)
        lengths = safe_norm(v)

        if train and targets is not None:
            if targets.shape != (bsz, self.num_classes):
                raise ValueError(f"CapsNet targets must be (B, num_classes) = "
                                 f"{(bsz, self.num_classes)}, got {targets.shape}")
            mask = targets.astype(v.dtype)
        else:
            mask = jax.nn.one_hot(jnp.argmax(lengths, axis=-1), self.num_classes, dtype=v.dtype)
        r = (v * mask[..., None]).reshape(bsz, -1)
        for i, f in enumerate(self.decoder_hidden):
            r = nn.relu(nn.Dense(f, dtype=self.dtype, name=f"decoder_fc{i + 1}")(r))
        out_dim = x.shape[1] * x.shape[2] * x.shape[3]
        r = nn.sigmoid(nn.Dense(out_dim, dtype=self.dtype,
                                name=f"decoder_fc{len(self.decoder_hidden) + 1}")(r))
        # Not at init: init would return the sown values as extra variable collections.
        if not self.is_initializing():
            self.sow("intermediates", "reconstruction", r.reshape(x.shape))
            sse = jnp.sum(jnp.square(r.astype(jnp.float32)
                                     - x.reshape(bsz, -1).astype(jnp.float32)), axis=-1)
            self.sow("losses", "reconstruction", self.reconstruction_weight * jnp.mean(sse))
        return lengths


@register_model(input_size=(28, 28, 1), num_classes=10, mean=(0.0,), std=(1.0,), crop_pct=1.0)
def capsnet_mnist(**kwargs):
    return CapsNet(**kwargs)


@register_model(input_size=(16, 16, 1), num_classes=4, mean=(0.0,), std=(1.0,), crop_pct=1.0)
def test_capsnet(**kwargs):
    return CapsNet(**dict(dict(num_classes=4, conv1_features=8, conv1_kernel=5, primary_caps=2,
                               primary_dim=4, primary_kernel=5, digit_dim=4,
                               decoder_hidden=(8, 16)), **kwargs))
