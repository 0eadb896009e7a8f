"""Training-time augmentations as pure, jit-able JAX functions.

Every op here is a *factory*: called with the paper's hyper-parameters it validates them
(at build time, never at trace time) and returns a pure function

* ``op(rng, images) -> images`` for per-image augmentations, or
* ``op(rng, images, targets) -> (images, targets)`` for the batch-mixing ops
  (``mixup``, ``cutmix``).

``images`` is a float batch ``(B, H, W, C)`` in [0, 1] pixel scale (mean/std
normalisation comes later, in the trainer) and ``targets`` are soft labels ``(B, K)``.
The functions are vectorised over the batch (a ``vmap`` of a per-image function fed with
that image's row of one batched uniform draw), deterministic in ``rng`` and keep the
dtype; all ops keep the shape, except the cropping ones whose output size is their
``size`` argument.

RandAugment lives in :mod:`jaxvision.data.randaugment`, the mixing ops in
:mod:`jaxvision.data.mixing`; both are re-exported here.  ``build_augment`` / ``build_mix``
turn a config string such as ``"random_crop(32, pad=4)|flip_lr|random_erasing(p=0.5)"``
into one such function.
"""
from __future__ import annotations

import ast
import difflib
import functools
import inspect
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvision.data.augment_util import (Augment, Mix, box_mask, check_fill, check_images,
                                         check_method, check_positive, check_prob, check_range,
                                         check_size, fill_values, int_below, is_number,
                                         per_image)
from jaxvision.data.mixing import cutmix, mixup
from jaxvision.data.randaugment import RANDAUGMENT_OPS, randaugment, randaugment_ops

__all__ = ["AUGMENTS", "MIXES", "RANDAUGMENT_OPS", "build_augment", "build_mix", "cutmix",
           "cutout", "flip_lr", "mixup", "pca_lighting", "randaugment", "randaugment_ops",
           "random_crop", "random_erasing", "random_resized_crop", "rgb_pca", "scale_jitter",
           "IMAGENET_EIGVAL", "IMAGENET_EIGVEC"]

# Eigen-decomposition of the RGB pixel covariance of ImageNet in [0, 1] pixel scale, as
# used for AlexNet-style lighting noise by fb.resnet.torch and most later ImageNet
# pipelines.  Columns of IMAGENET_EIGVEC are the eigenvectors (R, G, B rows), sorted by
# decreasing eigenvalue.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


# -------------------------------------------------------------------------------------------
# Geometric ops
# -------------------------------------------------------------------------------------------

def _random_crop(rng, images, *, size, pad, mode):
    check_images("random_crop", images, need_float=False)
    (py, px), (th, tw) = pad, (size or images.shape[1:3])
    if py or px:
        images = jnp.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode=mode)
    _, h, w, c = images.shape
    if th > h or tw > w:
        raise ValueError(f"random_crop: crop {th}x{tw} larger than the padded image {h}x{w}")

    def one(u, img):
        y, x = int_below(u[0], h - th + 1), int_below(u[1], w - tw + 1)
        return lax.dynamic_slice(img, (y, x, 0), (th, tw, c))

    return per_image(one, rng, images, 2)


def random_crop(size=None, pad=4, mode="constant") -> Augment:
    """Pad by ``pad`` pixels, then crop a random ``size`` window (Krizhevsky et al., 2012;
    the CIFAR "pad 4 and crop 32" of Lin et al., 2014 and He et al., 2016).  ``size=None``
    crops back to the size of the input (a random shift of up to ``pad`` pixels).

    Offsets are uniform integers, so every crop lies inside the padded image.
    ``mode`` is the padding: 'constant' (zeros) or 'reflect'.
    """
    size = None if size is None else check_size("random_crop", "size", size)
    pad_pair = (pad, pad) if is_number(pad) else pad
    if (not isinstance(pad_pair, (tuple, list)) or len(pad_pair) != 2
            or not all(is_number(q) and q >= 0 and float(q) == int(q) for q in pad_pair)):
        raise ValueError(f"random_crop: pad must be an int >= 0 or a (py, px) pair, got {pad!r}")
    pad = (int(pad_pair[0]), int(pad_pair[1]))
    if mode not in ("constant", "reflect"):
        raise ValueError(f"random_crop: mode must be 'constant' or 'reflect', got {mode!r}")
    return functools.partial(_random_crop, size=size, pad=pad, mode=mode)


def _flip_lr(rng, images, *, p):
    check_images("flip_lr", images, need_float=False)
    flip = jax.random.bernoulli(rng, p, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def flip_lr(p=0.5) -> Augment:
    """Horizontal reflection with probability ``p`` per image (Krizhevsky et al., 2012)."""
    return functools.partial(_flip_lr, p=check_prob("flip_lr", "p", p))


def _scale_jitter(rng, images, *, s_min, s_max, size, method):
    check_images("scale_jitter", images)
    _, h, w, c = images.shape
    th, tw = size
    short = min(h, w)

    def one(u, img):
        s = (s_min + int_below(u[0], s_max - s_min + 1)).astype(jnp.float32)
        scale = s / short
        # Rescaled image is (h * scale, w * scale); its short side is S >= size, so
        # integer offsets below keep the crop inside it.
        y = int_below(u[1], jnp.floor(h * scale).astype(jnp.int32) - th + 1)
        x = int_below(u[2], jnp.floor(w * scale).astype(jnp.int32) - tw + 1)
        return jax.image.scale_and_translate(
            img.astype(jnp.float32), (th, tw, c), (0, 1), jnp.stack([scale, scale]),
            -jnp.stack([y, x]).astype(jnp.float32), method=method, antialias=True)

    return per_image(one, rng, images, 3).astype(images.dtype)


def scale_jitter(s_min=256, s_max=512, size=224, method="bilinear") -> Augment:
    """VGG scale jittering (Simonyan & Zisserman, 2015): isotropically rescale each image so
    its shorter side is ``S ~ U{s_min, ..., s_max}`` (an integer), then take a random
    ``size`` crop.

    On device the output shape must be static, so the rescale and the crop are one
    ``jax.image.scale_and_translate`` call: scale ``S / min(H, W)`` on both axes and
    translation ``-offset``, where the integer offset is uniform over the crops that fit
    inside the rescaled image (``floor(H * scale)`` x ``floor(W * scale)``).  The result
    equals resizing the whole image by exactly that factor (antialiased ``method``
    filter) and slicing the window, without materialising the large image.
    """
    s_min = check_positive("scale_jitter", "s_min", s_min, integer=True)
    s_max = check_positive("scale_jitter", "s_max", s_max, integer=True)
    size = check_size("scale_jitter", "size", size)
    if s_min > s_max:
        raise ValueError(f"scale_jitter: need s_min <= s_max, got {s_min} > {s_max}")
    if max(size) > s_min:
        raise ValueError(f"scale_jitter: crop size {size} exceeds s_min={s_min}; the crop "
                         "must fit in the rescaled image")
    check_method("scale_jitter", method)
    return functools.partial(_scale_jitter, s_min=s_min, s_max=s_max, size=size,
                             method=method)


def _random_resized_crop(rng, images, *, size, scale, ratio, attempts, method):
    check_images("random_resized_crop", images)
    _, h, w, c = images.shape
    th, tw = size
    area = float(h * w)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def one(u, img):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
        aspect = jnp.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0])
                         * u[attempts:2 * attempts])
        cw = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
        ch = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
        ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = jnp.argmax(ok)
        # torchvision's fallback when no attempt fits: the whole image, clamped to the
        # ratio range, centred.
        in_ratio = w / h
        if in_ratio < ratio[0]:
            fw, fh = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            fh, fw = h, int(round(h * ratio[1]))
        else:
            fw, fh = w, h
        any_ok = jnp.any(ok)
        ch = jnp.where(any_ok, ch[first], fh)
        cw = jnp.where(any_ok, cw[first], fw)
        y = jnp.where(any_ok, int_below(u[-2], h - ch + 1), (h - fh) // 2)
        x = jnp.where(any_ok, int_below(u[-1], w - cw + 1), (w - fw) // 2)
        sy, sx = th / ch.astype(jnp.float32), tw / cw.astype(jnp.float32)
        return jax.image.scale_and_translate(
            img.astype(jnp.float32), (th, tw, c), (0, 1), jnp.stack([sy, sx]),
            -jnp.stack([y * sy, x * sx]), method=method, antialias=True)

    return per_image(one, rng, images, 2 * attempts + 2).astype(images.dtype)


def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10,
                        method="bilinear") -> Augment:
    """Inception-style crop (Szegedy et al., 2015): a box of ``scale`` x the image area
    and log-uniform aspect ``ratio`` (width / height), resized to ``size``.

    Up to ``attempts`` candidate boxes are drawn at once and the first that fits is used
    (torchvision also tries 10); if none fits, the centred largest box within ``ratio``.
    """
    size = check_size("random_resized_crop", "size", size)
    scale = check_range("random_resized_crop", "scale", scale, 0.0, 1.0)
    ratio = check_range("random_resized_crop", "ratio", ratio, 1e-6, 1e6)
    attempts = check_positive("random_resized_crop", "attempts", attempts, integer=True)
    check_method("random_resized_crop", method)
    return functools.partial(_random_resized_crop, size=size, scale=scale, ratio=ratio,
                             attempts=attempts, method=method)


# -------------------------------------------------------------------------------------------
# Photometric ops
# -------------------------------------------------------------------------------------------

def _pca_lighting(rng, images, *, std, eigval, eigvec):
    check_images("pca_lighting", images)
    if images.shape[-1] != eigvec.shape[0]:
        raise ValueError(f"pca_lighting: eigvec is for {eigvec.shape[0]} channels, images "
                         f"have {images.shape[-1]}")
    alpha = std * jax.random.normal(rng, (images.shape[0], eigval.shape[0]), jnp.float32)
    delta = (alpha * eigval) @ eigvec.T                     # (B, C): eigvec @ (alpha * eigval)
    return (images.astype(jnp.float32) + delta[:, None, None, :]).astype(images.dtype)


def pca_lighting(std=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC) -> Augment:
    """AlexNet's colour augmentation (Krizhevsky et al., 2012): add
    ``eigvec @ (alpha * eigval)`` to every pixel, one ``alpha ~ N(0, std^2)`` vector per
    image (drawn as ``std * jax.random.normal(rng, (B, k))``).

    ``eigvec`` columns are eigenvectors of the RGB covariance and ``eigval`` their
    eigenvalues; defaults are the ImageNet values commonly used in [0, 1] pixel scale
    (``IMAGENET_EIGVAL``/``IMAGENET_EIGVEC``).  Use :func:`rgb_pca` for other data.
    The result is not clipped, as in the paper.
    """
    std = check_positive("pca_lighting", "std", std, allow_zero=True)
    eigval_a = np.asarray(eigval, np.float32)
    eigvec_a = np.asarray(eigvec, np.float32)
    if (eigval_a.ndim != 1 or eigvec_a.ndim != 2 or eigvec_a.shape[1] != eigval_a.shape[0]
            or not np.all(np.isfinite(eigvec_a)) or not np.all(np.isfinite(eigval_a))):
        raise ValueError(f"pca_lighting: need eigval (k,) and eigvec (C, k), got shapes "
                         f"{eigval_a.shape} and {eigvec_a.shape}")
    return functools.partial(_pca_lighting, std=std, eigval=jnp.asarray(eigval_a),
                             eigvec=jnp.asarray(eigvec_a))


def rgb_pca(images) -> tuple[jax.Array, jax.Array]:
    """Eigen-decomposition of the channel covariance of ``images`` (..., C) for
    :func:`pca_lighting`: returns ``(eigval (C,), eigvec (C, C))`` with eigenvectors as
    columns, sorted by decreasing eigenvalue (the paper's ``lambda_i`` and ``p_i``)."""
    pixels = jnp.reshape(jnp.asarray(images, jnp.float32), (-1, jnp.shape(images)[-1]))
    centred = pixels - jnp.mean(pixels, axis=0)
    cov = centred.T @ centred / (pixels.shape[0] - 1)
    eigval, eigvec = jnp.linalg.eigh(cov)                   # ascending
    return eigval[::-1], eigvec[:, ::-1]


# -------------------------------------------------------------------------------------------
# Occlusion ops
# -------------------------------------------------------------------------------------------

def _cutout(rng, images, *, size, p, value):
    check_images("cutout", images)
    _, h, w, _ = images.shape
    sh, sw = size

    def one(u, img):
        cy, cx = int_below(u[1], h), int_below(u[2], w)
        y0, x0 = cy - sh // 2, cx - sw // 2
        mask = box_mask(h, w, y0, y0 + sh, x0, x0 + sw) & (u[0] < p)
        fill = fill_values(value, None, img)
        return jnp.where(mask, fill, img)

    return per_image(one, rng, images, 3).astype(images.dtype)


def cutout(size=16, p=1.0, value=0.0) -> Augment:
    """Cutout (DeVries & Taylor, 2017): with probability ``p`` set a ``size`` x ``size``
    square to ``value``; its centre is uniform over all pixels and it is clipped at the
    borders (so near an edge less than size^2 pixels change).

    The reference code cut out after normalisation, where 0 is the dataset mean; here
    images are still in [0, 1], so pass the dataset mean as ``value`` (a number or
    per-channel tuple, or 'mean' for each image's own mean) to reproduce that exactly.
    """
    size = check_size("cutout", "size", size)
    p = check_prob("cutout", "p", p)
    value = check_fill("cutout", "value", value, ("mean",))
    return functools.partial(_cutout, size=size, p=p, value=value)


def _random_erasing(rng, images, *, p, s_l, s_h, r_1, value, attempts):
    check_images("random_erasing", images)
    _, h, w, _ = images.shape
    area = float(h * w)

    def one(u, img, noise):
        target = area * (s_l + (s_h - s_l) * u[:attempts])
        aspect = r_1 + (1.0 / r_1 - r_1) * u[attempts:2 * attempts]
        eh = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
        ew = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
        # A candidate is accepted only if the *pixel* box fits and still satisfies the
        # area and aspect bounds after rounding, so erased boxes obey them exactly.
        box = (eh * ew).astype(jnp.float32)
        ok = ((eh >= 1) & (ew >= 1) & (eh <= h) & (ew <= w)
              & (box >= s_l * area) & (box <= s_h * area)
              & (eh >= r_1 * ew) & (r_1 * eh <= ew))
        first = jnp.argmax(ok)
        eh, ew = eh[first], ew[first]
        y0 = int_below(u[-2], jnp.maximum(h - eh + 1, 1))
        x0 = int_below(u[-1], jnp.maximum(w - ew + 1, 1))
        erase = (u[-3] < p) & jnp.any(ok)
        mask = box_mask(h, w, y0, y0 + eh, x0, x0 + ew) & erase
        return jnp.where(mask, fill_values(value, noise, img), img)

    k_box, k_noise = jax.random.split(rng)
    # Algorithm 1 of Zhong et al. draws every erased pixel from Rand(0, 255): U(0, 1) here.
    noise = (jax.random.uniform(k_noise, images.shape, jnp.float32) if value == "random"
             else jnp.zeros((images.shape[0],), jnp.float32))
    u = jax.random.uniform(k_box, (images.shape[0], 2 * attempts + 3), jnp.float32)
    return jax.vmap(one)(u, images, noise).astype(images.dtype)


def random_erasing(p=0.5, s_l=0.02, s_h=0.4, r_1=0.3, value="random", attempts=10) -> Augment:
    """Random Erasing (Zhong et al., 2020, Algorithm 1).

    With probability ``p`` an image gets one box of area ``S_e ~ U(s_l, s_h) * H * W`` and
    aspect ``r_e = H_e / W_e ~ U(r_1, 1 / r_1)`` filled with ``value``: 'random' (every
    pixel ~ U(0, 1), the paper's Rand(0, 255) in [0, 1] scale), a number, a per-channel
    tuple, or 'mean' (the image's per-channel mean).

    The paper retries until the box fits.  On device ``attempts`` candidates are drawn at
    once; ``H_e``, ``W_e`` are rounded to whole pixels and the first candidate that fits
    the image *and* still has area in ``[s_l, s_h] * H * W`` and aspect in
    ``[r_1, 1 / r_1]`` is used, placed uniformly among the positions where it fits (as in
    the authors' code).  If no candidate qualifies the image is left unchanged.
    """
    p = check_prob("random_erasing", "p", p)
    s_l = check_prob("random_erasing", "s_l", s_l)
    s_h = check_prob("random_erasing", "s_h", s_h)
    if not s_l < s_h:
        raise ValueError(f"random_erasing: need s_l < s_h, got s_l={s_l}, s_h={s_h}")
    if not is_number(r_1) or not 0 < r_1 <= 1:
        raise ValueError(f"random_erasing: r_1 must be in (0, 1], got {r_1!r}")
    value = check_fill("random_erasing", "value", value, ("random", "mean"))
    attempts = check_positive("random_erasing", "attempts", attempts, integer=True)
    return functools.partial(_random_erasing, p=p, s_l=s_l, s_h=s_h, r_1=float(r_1),
                             value=value, attempts=attempts)


# -------------------------------------------------------------------------------------------
# Spec parser
# -------------------------------------------------------------------------------------------

AUGMENTS = {
    "random_crop": random_crop,
    "flip_lr": flip_lr,
    "scale_jitter": scale_jitter,
    "random_resized_crop": random_resized_crop,
    "pca_lighting": pca_lighting,
    "cutout": cutout,
    "random_erasing": random_erasing,
    "randaugment": randaugment,
}
MIXES = {"mixup": mixup, "cutmix": cutmix}


def _split_top_level(spec: str) -> list[str]:
    """Split on '|' outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(spec):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    items.append(spec[start:])
    return items


def _parse_item(item: str) -> tuple[str, tuple, dict]:
    """``'name(1, k=2)'`` -> ``('name', (1,), {'k': 2})`` using literals only."""
    try:
        node = ast.parse(item.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse augmentation {item.strip()!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"cannot parse augmentation {item.strip()!r}: expected name or "
                         "name(arg, key=value, ...)")
    name = node.func.id

    def literal(arg_node, label):
        if isinstance(arg_node, ast.Starred):
            raise ValueError(f"{name}: *args are not supported")
        try:
            return ast.literal_eval(arg_node)
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"{name}: {label} is not a Python literal: "
                             f"{ast.unparse(arg_node)!r}") from None

    args = tuple(literal(a, f"argument {i + 1}") for i, a in enumerate(node.args))
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{name}: **kwargs are not supported")
        kwargs[kw.arg] = literal(kw.value, f"argument {kw.arg!r}")
    return name, args, kwargs


def _build(spec: str, table: dict, other: dict, what: str, other_builder: str) -> list:
    ops = []
    items = _split_top_level(spec)
    for item in items:
        if not item.strip():
            raise ValueError(f"empty op in {what} spec {spec!r}")
        name, args, kwargs = _parse_item(item)
        if name not in table:
            if name in other:
                raise ValueError(f"{name!r} is not {what}; pass it to {other_builder}")
            close = difflib.get_close_matches(name, list(table), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown {what} op {name!r}{hint} (known: {sorted(table)})")
        factory = table[name]
        sig = inspect.signature(factory)
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"{name}: {e}; accepted arguments: "
                             f"{', '.join(sig.parameters)}") from None
        ops.append(factory(*args, **kwargs))
    return ops


def build_augment(spec: str) -> Augment:
    """Parse ``"op1(args)|op2|..."`` into ``fn(rng, images) -> images`` applying the ops in
    order, each with its own key ``split(rng, n_ops)[i]``.  An empty spec is the identity.

    Arguments are Python literals (``random_crop(32, pad=4, mode='reflect')``); names and
    values are validated here, so a bad spec fails before anything is traced.
    """
    spec = (spec or "").strip()
    ops = _build(spec, AUGMENTS, MIXES, "an augmentation", "build_mix") if spec else []

    def augment(rng, images):
        if not ops:
            return images
        for key, op in zip(jax.random.split(rng, len(ops)), ops):
            images = op(key, images)
        return images

    augment.spec = spec
    return augment


def build_mix(spec: str) -> Optional[Mix]:
    """Parse ``"mixup(alpha=0.2)"`` or ``"cutmix(alpha=1.0)"`` into
    ``fn(rng, images, targets) -> (images, targets)``; ``""`` gives ``None``.

    Several ops joined by '|' (``"mixup(alpha=0.8)|cutmix(alpha=1.0)"``) pick one of them
    uniformly at random per batch, like timm's mixup/cutmix switch.
    """
    spec = (spec or "").strip()
    if not spec:
        return None
    ops = _build(spec, MIXES, AUGMENTS, "a mix", "build_augment")
    if len(ops) == 1:
        mix = ops[0]
    else:
        def mix(rng, images, targets):
            kc, ko = jax.random.split(rng)
            which = jax.random.randint(kc, (), 0, len(ops))
            branches = [functools.partial(op, ko) for op in ops]
            return lax.switch(which, branches, images, targets)
    mix.spec = spec
    return mix

