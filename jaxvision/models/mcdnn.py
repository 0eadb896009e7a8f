"""Multi-column deep neural networks (Ciresan, Meier & Schmidhuber, 2012).

An MCDNN is a committee of independently trained columns; each column sees the training
set through its own preprocessing (for MNIST, digits whose bounding box is normalised to a
width of 10, 12, ..., 20 pixels, plus the original) and the committee averages the columns'
softmax outputs.  This module provides

* :class:`MCDNNColumn`, the MNIST column ``1x29x29-20C4-MP2-40C5-MP3-150N-10N`` (registered
  as ``mcdnn_column_mnist``): valid convolutions, non-overlapping max-pooling, a 150-unit
  hidden layer and a 10-way softmax output.  The paper uses hyperbolic-tangent units in
  the convolutional and fully connected layers; ``act_layer='tanh'`` is therefore the
  default (``'scaled_tanh'``, ``'relu'``, ``'prelu'`` are available).
* column preprocessing functions (pure ``jnp``, jit/vmap friendly, usable on device):
  :func:`identity`, :func:`normalize_width`, :func:`pad_to`, :func:`width_normalizer`;
* :class:`Committee` / :func:`committee_predict`, which average the columns' softmax outputs.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from jaxvision.layers import Conv
from jaxvision.layers.activations import create_act
from jaxvision.layers.head import classifier_head
from jaxvision.layers.pooling import max_pool
from jaxvision.registry import MNIST_MEAN, MNIST_STD, register_model


class MCDNNColumn(nn.Module):
    """One DNN column: ``(conv k_i valid -> act -> max-pool p_i)`` stages, a hidden layer, a
    linear output (softmax in the loss).  Defaults: the paper's MNIST column
    ``1x29x29-20C4-MP2-40C5-MP3-150N-10N`` (29 -> 26 -> 13 -> 9 -> 3 spatially)."""

    num_classes: int = 10
    features: Sequence[int] = (20, 40)
    kernels: Sequence[int] = (4, 5)
    pools: Sequence[int] = (2, 3)
    hidden: int = 150
    act_layer: Any = "tanh"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if not len(self.features) == len(self.kernels) == len(self.pools):
            raise ValueError("features, kernels and pools must have the same length")
        for i, (f, k, p) in enumerate(zip(self.features, self.kernels, self.pools)):
            x = Conv(f, (k, k), padding="VALID", dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = create_act(self.act_layer, f"act{i + 1}", self.dtype)(x)
            if x.shape[1] < p or x.shape[2] < p:
                raise ValueError(f"input too small: a {x.shape[1]}x{x.shape[2]} map cannot be "
                                 f"max-pooled by {p}")
            x = max_pool(x, p, p)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = create_act(self.act_layer, "act_fc1", self.dtype)(x)
        return classifier_head(x, self.num_classes, name="fc2", dtype=self.dtype)


# --------------------------------------------------------------------------------------
# Column preprocessing (pure jnp)
# --------------------------------------------------------------------------------------

def identity(images):
    """The original images (the paper's un-normalised column)."""
    return images


def _as_bhwc(images):
    if images.ndim == 3:
        return images[..., None], True
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W) or (B, H, W, C), got shape {images.shape}")
    return images, False


def _normalize_width_one(img, width: float, threshold: float):
    # img: (H, W, C).  The background is the image minimum, so raw [0, 255] digits and
    # mean/std-standardised digits are treated alike.
    h, w, _ = img.shape
    gray = jnp.max(img, axis=-1)
    lo, hi = jnp.min(gray), jnp.max(gray)
    ink = gray > lo + threshold * (hi - lo)
    cols = jnp.any(ink, axis=0)
    has_ink = jnp.any(cols)
    left = jnp.argmax(cols)
    right = w - 1 - jnp.argmax(cols[::-1])
    box = (right - left + 1).astype(jnp.float32)
    scale = jnp.where(has_ink, width / box, 1.0)
    centre_src = jnp.where(has_ink, (left + right) / 2.0, (w - 1) / 2.0)
    centre_dst = (w - 1) / 2.0
    rows, cols_out = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                                  jnp.arange(w, dtype=jnp.float32), indexing="ij")
    # Stretch horizontally only (the height of the 20-pixel box is kept), around the box
    # centre, which moves to the image centre.
    src_x = centre_src + (cols_out - centre_dst) / scale
    # Resample the image relative to its background, so outside the source is background.
    out = jax.vmap(lambda ch: map_coordinates(ch - lo, [rows, src_x], order=1,
                                              mode="constant", cval=0.0),
                   in_axes=-1, out_axes=-1)(img)
    return (out + lo).astype(img.dtype)


def normalize_width(images, width: float, threshold: float = 0.1):
    """Stretch each digit horizontally so that its bounding box is ``width`` pixels wide
    (Ciresan et al. normalise MNIST to widths 10, 12, ..., 20).

    ``images``: (B, H, W) or (B, H, W, C).  Ink is any pixel above
    ``min + threshold * (max - min)`` of its image; blank images are returned unchanged.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    x, squeeze = _as_bhwc(jnp.asarray(images))
    out = jax.vmap(lambda im: _normalize_width_one(im, float(width), threshold))(x)
    return out[..., 0] if squeeze else out


def pad_to(images, size: int | tuple[int, int], value: float | None = None):
    """Pad (bottom/right first) to ``size``; the fill is each image's minimum (background)
    unless ``value`` is given.  MNIST's 28x28 digits become the column's 29x29 input."""
    x, squeeze = _as_bhwc(jnp.asarray(images))
    th, tw = (size, size) if isinstance(size, int) else size
    _, h, w, _ = x.shape
    if th < h or tw < w:
        raise ValueError(f"cannot pad {h}x{w} images to the smaller size {th}x{tw}")
    dh, dw = th - h, tw - w
    pads = ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0))
    fill = (jnp.min(x, axis=(1, 2, 3), keepdims=True) if value is None
            else jnp.full((x.shape[0], 1, 1, 1), value, x.dtype))
    mask = jnp.pad(jnp.ones((1, h, w, 1), bool), pads)
    out = jnp.where(mask, jnp.pad(x, pads), fill)
    return out[..., 0] if squeeze else out


def compose(*fns: Callable) -> Callable:
    """Apply preprocessing functions left to right."""

    def run(images):
        for f in fns:
            images = f(images)
        return images

    return run


def width_normalizer(width: float | None, size: int = 29) -> Callable:
    """The preprocessing of one MNIST column: width normalisation (``None``: original digits)
    followed by padding to ``size``."""
    first = identity if width is None else (lambda im: normalize_width(im, width))
    return compose(first, lambda im: pad_to(im, size))


# --------------------------------------------------------------------------------------
# Committee
# --------------------------------------------------------------------------------------

class Column(NamedTuple):
    """A trained column: its module, its variables and its input preprocessing."""
    model: nn.Module
    variables: Any
    preprocess: Callable = identity


class Committee:
    """Averages the softmax outputs of its columns (the MCDNN's final prediction).

    Each column's preprocessing and forward pass is jitted once and reused.
    """

    def __init__(self, columns: Sequence[Column | tuple]):
        if not columns:
            raise ValueError("a committee needs at least one column")
        self.columns = [c if isinstance(c, Column) else Column(*c) for c in columns]
        # Columns sharing a module and a preprocessing function share one compiled function.
        compiled = {}
        for c in self.columns:
            key = (id(c.model), id(c.preprocess))
            if key not in compiled:
                compiled[key] = jax.jit(self._column_fn(c.model, c.preprocess))
        self._fns = [compiled[(id(c.model), id(c.preprocess))] for c in self.columns]

    @staticmethod
    def _column_fn(model, preprocess):
        def probs(variables, images):
            logits = model.apply(variables, preprocess(images), train=False)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return probs

    def column_probs(self, images):
        """(n_columns, B, num_classes) softmax outputs."""
        outs = [fn(c.variables, images) for fn, c in zip(self._fns, self.columns)]
        shapes = {o.shape for o in outs}
        if len(shapes) != 1:
            raise ValueError(f"columns disagree on the output shape: {sorted(shapes)}")
        return jnp.stack(outs)

    def __call__(self, images):
        """(B, num_classes) committee probabilities: the mean of the columns' softmax."""
        return jnp.mean(self.column_probs(images), axis=0)


def committee_predict(columns: Sequence[Column | tuple], images):
    """Average softmax output of ``columns`` ((model, variables, preprocess) triples)."""
    return Committee(columns)(images)


@register_model(input_size=(29, 29, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
                crop_pct=1.0)
def mcdnn_column_mnist(**kwargs):
    return MCDNNColumn(**kwargs)


@register_model(input_size=(29, 29, 1), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD,
                crop_pct=1.0)
def test_mcdnn(**kwargs):
    return MCDNNColumn(**dict(dict(features=(4, 8), hidden=16), **kwargs))


__all__ = ["Column", "Committee", "MCDNNColumn", "committee_predict", "compose", "identity",
           "normalize_width", "pad_to", "width_normalizer"]
