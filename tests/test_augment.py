"""Tests for jaxvision.data.augment: shapes, determinism, the papers' exact properties,
and the spec parser.  Images are tiny and each jitted op is compiled once per test."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxvision.data import augment as A

FEW = settings(max_examples=8, deadline=None)


def _images(seed=0, shape=(4, 16, 16, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _distinct(shape):
    """Every pixel value distinct (and non-zero), so windows can be located exactly."""
    return (jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape) + 1.0)


# -------------------------------------------------------------------------------------------
# Every op: shape, dtype, determinism, jit == eager
# -------------------------------------------------------------------------------------------

SPECS = [
    ("random_crop(16, pad=2)", (4, 16, 16, 3)),
    ("random_crop(12, pad=(1, 2), mode='reflect')", (4, 12, 12, 3)),
    ("flip_lr", (4, 16, 16, 3)),
    ("scale_jitter(16, 24, 12)", (4, 12, 12, 3)),
    ("random_resized_crop(8)", (4, 8, 8, 3)),
    ("pca_lighting", (4, 16, 16, 3)),
    ("cutout(6)", (4, 16, 16, 3)),
    ("random_erasing(p=1.0, value='mean')", (4, 16, 16, 3)),
    ("randaugment(2, 9)", (4, 16, 16, 3)),
    ("random_crop(16, pad=2)|flip_lr|random_erasing(p=0.5)", (4, 16, 16, 3)),
]


@pytest.mark.parametrize("spec,out_shape", SPECS)
def test_op_shape_dtype_determinism_and_jit(spec, out_shape):
    fn = A.build_augment(spec)
    x = _images()
    key = jax.random.key(3)
    jitted = jax.jit(fn)
    out = jitted(key, x)
    assert out.shape == out_shape and out.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(np.asarray(jitted(key, x)), np.asarray(out))
    np.testing.assert_allclose(np.asarray(fn(key, x)), np.asarray(out), atol=1e-5)
    other = jitted(jax.random.key(4), x)
    assert not np.array_equal(np.asarray(other), np.asarray(out)), "output ignores the key"


@pytest.mark.parametrize("spec", ["flip_lr|cutout(4)", "pca_lighting|random_erasing(p=1.0)"])
def test_bfloat16_is_preserved(spec):
    x = _images().astype(jnp.bfloat16)
    out = jax.jit(A.build_augment(spec))(jax.random.key(0), x)
    assert out.dtype == jnp.bfloat16 and out.shape == x.shape


# -------------------------------------------------------------------------------------------
# Geometric ops
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_is_a_window_of_the_padded_image(mode):
    b, h, w, c, pad, size = 16, 8, 8, 2, 3, 8
    x = _distinct((b, h, w, c))
    out = np.asarray(jax.jit(A.random_crop(size, pad=pad, mode=mode))(jax.random.key(0), x))
    padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    offsets = set()
    for i in range(b):
        hits = [(y, xx) for y in range(h + 2 * pad - size + 1)
                for xx in range(w + 2 * pad - size + 1)
                if np.array_equal(out[i], padded[i, y:y + size, xx:xx + size])]
        assert len(hits) == 1, f"crop {i} is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3, "offsets are not random"


def test_flip_lr():
    x = _distinct((64, 4, 5, 1))
    out = np.asarray(jax.jit(A.flip_lr())(jax.random.key(1), x))
    xs = np.asarray(x)
    flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, xs)]
    same = [np.array_equal(o, xi) for o, xi in zip(out, xs)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 <= sum(flipped) <= 48
    np.testing.assert_array_equal(A.flip_lr(p=0.0)(jax.random.key(1), x), x)
    np.testing.assert_array_equal(A.flip_lr(p=1.0)(jax.random.key(1), x), x[:, :, ::-1])


def test_scale_jitter_rescales_isotropically_within_range():
    # Channels hold the y and x pixel-centre coordinates: bilinear resampling reproduces a
    # linear ramp exactly, so each output reveals its scale and crop offset.
    b, h, w, size, s_min, s_max = 32, 16, 20, 12, 16, 32
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    ramp = np.stack([yy, xx], -1).astype(np.float32)
    x = jnp.broadcast_to(ramp, (b, h, w, 2))
    out = np.asarray(jax.jit(A.scale_jitter(s_min, s_max, size))(jax.random.key(0), x),
                     np.float64)
    c = size // 2
    seen = set()
    for o in out:
        slope_y = o[c + 1, c, 0] - o[c, c, 0]
        slope_x = o[c, c + 1, 1] - o[c, c, 1]
        np.testing.assert_allclose(slope_y, slope_x, rtol=1e-4)
        s = min(h, w) / slope_x                              # shorter side after rescaling
        assert s_min - 1e-2 <= s <= s_max + 1e-2
        assert abs(s - round(s)) < 1e-2
        scale = round(s) / min(h, w)
        oy = o[c, c, 0] * scale - c - 0.5
        ox = o[c, c, 1] * scale - c - 0.5
        assert abs(oy - round(oy)) < 1e-2 and abs(ox - round(ox)) < 1e-2
        assert 0 <= round(oy) <= np.floor(h * scale) - size
        assert 0 <= round(ox) <= np.floor(w * scale) - size
        seen.add(round(s))
    assert len(seen) > 4, "S is not random"


def test_random_resized_crop_full_box_is_identity():
    x = _images(shape=(3, 10, 10, 3))
    out = A.random_resized_crop(10, scale=(1.0, 1.0), ratio=(1.0, 1.0))(jax.random.key(0), x)
    np.testing.assert_allclose(out, x, atol=1e-5)


# -------------------------------------------------------------------------------------------
# PCA lighting
# -------------------------------------------------------------------------------------------

def test_pca_lighting_adds_eigvec_alpha_eigval():
    b, std = 512, 0.1
    x = _images(shape=(b, 4, 4, 3))
    key = jax.random.key(7)
    out = np.asarray(jax.jit(A.pca_lighting(std=std))(key, x), np.float64)
    delta = out - np.asarray(x, np.float64)
    # The same vector is added to every pixel of an image.
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1, :1], delta.shape), atol=1e-6)
    per_image = delta[:, 0, 0]                               # (B, 3)
    eigval = np.asarray(A.IMAGENET_EIGVAL)
    eigvec = np.asarray(A.IMAGENET_EIGVEC)
    # Exactly eigvec @ (alpha * eigval) with alpha from the documented RNG path.
    alpha = std * np.asarray(jax.random.normal(key, (b, 3)), np.float64)
    np.testing.assert_allclose(per_image, (alpha * eigval) @ eigvec.T, atol=1e-6)
    # Coordinates in the eigenbasis, divided by the eigenvalues, look like N(0, std^2).
    coords = np.linalg.solve(eigvec, per_image.T).T / eigval
    assert np.all(np.abs(coords.mean(0)) < 4 * std / np.sqrt(b))
    np.testing.assert_allclose(coords.std(0), std, rtol=0.15)


def test_rgb_pca_matches_numpy():
    rng = np.random.default_rng(0)
    mix = np.array([[0.3, 0.0, 0.0], [0.2, 0.1, 0.0], [0.1, 0.05, 0.02]])
    pixels = rng.normal(size=(4000, 3)) @ mix.T + 0.5
    eigval, eigvec = A.rgb_pca(jnp.asarray(pixels.reshape(10, 20, 20, 3), jnp.float32))
    cov = np.cov(pixels, rowvar=False)
    ref = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(eigval, ref, rtol=1e-3, atol=1e-7)
    assert np.all(np.diff(np.asarray(eigval)) <= 0)
    v = np.asarray(eigvec, np.float64)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-4)
    np.testing.assert_allclose(v @ np.diag(np.asarray(eigval)) @ v.T, cov, rtol=1e-3, atol=1e-6)


# -------------------------------------------------------------------------------------------
# Occlusion
# -------------------------------------------------------------------------------------------

def _zero_box(img2d):
    """(top, bottom, left, right) of the zeros of a 2-D map, asserting they form a box."""
    ys, xs = np.nonzero(img2d == 0)
    if ys.size == 0:
        return None
    t, bt, l, r = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    assert ys.size == (bt - t) * (r - l), "erased pixels do not form a rectangle"
    return t, bt, l, r


def test_cutout_square_clipped_at_borders():
    b, h, w, size = 64, 12, 12, 5
    x = jnp.ones((b, h, w, 2))
    out = np.asarray(jax.jit(A.cutout(size))(jax.random.key(0), x))
    clipped = 0
    for o in out:
        assert np.all(o[..., 0] == o[..., 1])
        box = _zero_box(o[..., 0])
        assert box is not None
        t, bt, l, r = box
        assert bt - t <= size and r - l <= size
        if t > 0 and bt < h:
            assert bt - t == size
        if l > 0 and r < w:
            assert r - l == size
        clipped += (bt - t) * (r - l) < size * size
    assert clipped > 0, "centres never fell near a border"
    np.testing.assert_array_equal(A.cutout(size, p=0.0)(jax.random.key(0), x), x)


_ERASE = dict(p=1.0, s_l=0.02, s_h=0.4, r_1=0.3, value=0)
_erase = jax.jit(A.random_erasing(**_ERASE))


@FEW
@given(st.integers(0, 2 ** 31 - 1))
def test_random_erasing_area_and_aspect(seed):
    b, h, w = 32, 16, 16
    out = np.asarray(_erase(jax.random.key(seed), jnp.ones((b, h, w, 1))))
    erased = 0
    for o in out:
        box = _zero_box(o[..., 0])
        if box is None:
            continue
        erased += 1
        t, bt, l, r = box
        eh, ew = bt - t, r - l
        assert _ERASE["s_l"] <= eh * ew / (h * w) <= _ERASE["s_h"]
        assert _ERASE["r_1"] <= eh / ew <= 1 / _ERASE["r_1"]
    assert erased >= b * 0.8, "too few boxes fitted in 10 attempts"


def test_random_erasing_probability_and_fill():
    b = 256
    x = jnp.ones((b, 16, 16, 3))
    out = np.asarray(jax.jit(A.random_erasing(p=0.5))(jax.random.key(1), x))
    changed = (out != 1).reshape(b, -1).any(1)
    assert 0.35 < changed.mean() < 0.65
    vals = out[out != 1]
    assert vals.min() >= 0 and vals.max() < 1 and vals.std() > 0.2   # U(0, 1) noise
    never = A.random_erasing(p=0.0)(jax.random.key(1), x)
    np.testing.assert_array_equal(never, x)


def test_random_erasing_leaves_image_when_nothing_fits():
    # Area at least 90% with aspect in [0.95, 1.05] on a 1x16 image can never fit.
    x = _images(shape=(4, 1, 16, 1))
    out = A.random_erasing(p=1.0, s_l=0.9, s_h=1.0, r_1=0.95)(jax.random.key(0), x)
    np.testing.assert_array_equal(out, x)


# -------------------------------------------------------------------------------------------
# RandAugment ops
# -------------------------------------------------------------------------------------------

def _quantised(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=shape).astype(np.float32) / 255.0   # < 1 everywhere


def test_randaugment_ops_at_zero_magnitude_are_identity():
    img = jnp.asarray(_quantised((9, 11, 3)))
    ops = A.randaugment_ops(0.0)
    assert tuple(ops) == A.RANDAUGMENT_OPS
    for name in ("identity", "rotate", "solarize", "color", "posterize", "contrast",
                 "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
                 "translate_y"):
        for sign in (-1.0, 1.0):
            np.testing.assert_allclose(ops[name](img, sign), img, atol=1e-5, err_msg=name)


def test_randaugment_translate_and_rotate_geometry():
    h, w = 9, 20
    img = jnp.asarray(_quantised((h, w, 2)))
    ops = A.randaugment_ops(1.0)                     # 45% of 20 = 9 pixels
    moved = np.asarray(ops["translate_x"](img, 1.0))
    np.testing.assert_allclose(moved[:, :w - 9], img[:, 9:], atol=1e-6)
    np.testing.assert_allclose(moved[:, w - 9:], 0.5, atol=1e-6)
    back = np.asarray(ops["translate_x"](img, -1.0))
    np.testing.assert_allclose(back[:, 9:], img[:, :w - 9], atol=1e-6)
    sq = jnp.asarray(_quantised((9, 9, 1)))
    rotated = np.asarray(ops["rotate"](sq, 1.0))
    np.testing.assert_allclose(rotated[4, 4], sq[4, 4], atol=1e-6)   # centre is fixed
    assert not np.allclose(rotated, sq)


def test_randaugment_photometric_ops_match_pil():
    from PIL import Image, ImageEnhance, ImageOps
    arr = (_quantised((12, 10, 3), seed=3) * 255).round().astype(np.uint8)
    arr[..., 2] = arr[..., 2] // 3 + 40                      # uneven histograms
    img = jnp.asarray(arr, jnp.float32) / 255.0
    pil = Image.fromarray(arr)
    ops = A.randaugment_ops(1.0)
    np.testing.assert_allclose(np.asarray(ops["equalize"](img, 1.0)) * 255,
                               np.asarray(ImageOps.equalize(pil)), atol=1e-3)
    np.testing.assert_allclose(np.asarray(ops["autocontrast"](img, 1.0)) * 255,
                               np.asarray(ImageOps.autocontrast(pil)), atol=1.01)
    for name, enh in (("sharpness", ImageEnhance.Sharpness), ("color", ImageEnhance.Color),
                      ("brightness", ImageEnhance.Brightness)):
        for sign in (-1.0, 1.0):
            ref = np.asarray(enh(pil).enhance(1.0 + 0.9 * sign), np.float32)
            np.testing.assert_allclose(np.asarray(ops[name](img, sign)) * 255, ref,
                                       atol=1.51, err_msg=f"{name} {sign}")
    np.testing.assert_allclose(np.asarray(ops["posterize"](img, 1.0)) * 255,
                               np.asarray(ImageOps.posterize(pil, 4)), atol=1e-3)


# -------------------------------------------------------------------------------------------
# Mixing
# -------------------------------------------------------------------------------------------

_B, _K = 6, 6
_mixup = jax.jit(A.mixup(alpha=0.4))
_cutmix = jax.jit(A.cutmix(alpha=1.0))


@FEW
@given(st.integers(0, 2 ** 31 - 1))
def test_mixup_mixes_images_and_targets_with_one_lambda(seed):
    x = _images(seed % 1000, (_B, 5, 5, 3))
    y = jax.nn.one_hot(jnp.arange(_B), _K)
    xm, ym = _mixup(jax.random.key(seed), x, y)
    np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
    lam = float(ym[0, 0])
    assert 0.0 <= lam <= 1.0
    np.testing.assert_allclose(ym, lam * y + (1 - lam) * y[::-1], atol=1e-6)
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[::-1], atol=1e-5)


@FEW
@given(st.integers(0, 2 ** 31 - 1))
def test_cutmix_label_weight_is_exact_pasted_fraction(seed):
    h, w = 10, 14
    x = _distinct((_B, h, w, 2))                             # images differ at every pixel
    y = jax.nn.one_hot(jnp.arange(_B), _K) * 0.9 + 0.1 / _K  # smoothed soft labels
    xm, ym = _cutmix(jax.random.key(seed), x, y)
    xm, ym, xn, yn = map(np.asarray, (xm, ym, x, y))
    np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
    changed = (xm != xn).any(-1)                             # (B, h, w)
    fractions = changed.reshape(_B, -1).mean(1)
    for i in range(_B):
        j = _B - 1 - i
        np.testing.assert_array_equal(xm[i][changed[i]], xn[j][changed[i]])
        np.testing.assert_allclose(ym[i], (1 - fractions[i]) * yn[i] + fractions[i] * yn[j],
                                   atol=1e-6)
    # One box for the whole batch.
    assert all(np.array_equal(changed[0], c) for c in changed)
    if fractions[0] > 0:
        t, b, l, r = _zero_box(np.where(changed[0], 0, 1))
        assert (b - t) * (r - l) == changed[0].sum()


def test_cutmix_area_matches_lambda_on_average():
    # Before clipping the box covers 1 - lambda; with alpha=1, E[1 - lambda] = 1/2 and
    # clipping only shrinks boxes, so the mean pasted fraction is a bit below 1/2.
    keys = jax.random.split(jax.random.key(0), 200)
    x = jnp.zeros((2, 32, 32, 1)).at[1].set(1.0)
    y = jnp.eye(2)
    fracs = jax.vmap(lambda k: _cutmix(k, x, y)[1][0, 1])(keys)
    assert 0.2 < float(fracs.mean()) < 0.5


def test_build_mix_switch_and_none():
    assert A.build_mix("") is None and A.build_mix(None) is None
    mix = jax.jit(A.build_mix("mixup(alpha=0.2)|cutmix(alpha=1.0)"))
    x, y = _images(0, (_B, 6, 6, 1)), jax.nn.one_hot(jnp.arange(_B), _K)
    kinds = set()
    for s in range(12):
        xm, ym = mix(jax.random.key(s), x, y)
        np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
        unchanged = np.isclose(np.asarray(xm), np.asarray(x)).mean()
        kinds.add("cutmix" if unchanged > 0 and np.any(~np.isclose(xm, x)) else "mixup")
    assert kinds == {"mixup", "cutmix"}


# -------------------------------------------------------------------------------------------
# Parser
# -------------------------------------------------------------------------------------------

def test_build_augment_applies_ops_in_order_with_split_keys():
    x = _images()
    key = jax.random.key(5)
    out = A.build_augment("flip_lr | pca_lighting(std=0.2)")(key, x)
    k1, k2 = jax.random.split(key)
    ref = A.pca_lighting(std=0.2)(k2, A.flip_lr()(k1, x))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_build_augment_empty_is_identity():
    x = _images()
    assert A.build_augment("")(jax.random.key(0), x) is x
    assert A.build_augment("  ")(jax.random.key(0), x) is x


def test_parser_arguments():
    f = A.build_augment("random_crop(12, pad=(1, 2), mode='reflect')")
    assert f.spec.startswith("random_crop")
    assert f(jax.random.key(0), _images()).shape == (4, 12, 12, 3)
    g = A.build_augment("random_erasing(0.5, 0.1, s_h=0.3, value=(0.5, 0.4, 0.3))")
    assert g(jax.random.key(0), _images()).shape == (4, 16, 16, 3)


@pytest.mark.parametrize("spec,fragments", [
    ("random_crp(32)", ["random_crp", "random_crop"]),
    ("flip_ud", ["flip_ud"]),
    ("random_crop(32, padding=4)", ["random_crop", "padding", "size, pad, mode"]),
    ("flip_lr(0.5, 0.2)", ["flip_lr", "accepted arguments: p"]),
    ("flip_lr(p=1.5)", ["flip_lr", "p"]),
    ("random_erasing(s_l=0.5, s_h=0.2)", ["s_l < s_h"]),
    ("random_erasing(r_1=0)", ["r_1"]),
    ("random_erasing(value='blue')", ["value", "random"]),
    ("random_crop(size=__import__('os').getcwd())", ["random_crop", "not a Python literal"]),
    ("random_crop(0)", ["size"]),
    ("scale_jitter(512, 256)", ["s_min <= s_max"]),
    ("scale_jitter(100, 200, 224)", ["s_min"]),
    ("randaugment(2, 11)", ["m must be in"]),
    ("mixup(0.2)", ["build_mix"]),
    ("flip_lr||cutout", ["empty op"]),
    ("random_crop(32", ["cannot parse"]),
])
def test_augment_spec_errors(spec, fragments):
    with pytest.raises(ValueError) as e:
        A.build_augment(spec)
    for frag in fragments:
        assert frag in str(e.value), str(e.value)


@pytest.mark.parametrize("spec,fragments", [
    ("mixup(alpha=0)", ["mixup", "alpha"]),
    ("cutmix(alpha=-1.0)", ["cutmix", "alpha"]),
    ("mixupp(0.2)", ["mixupp", "mixup"]),
    ("mixup(beta=0.2)", ["mixup", "accepted arguments: alpha"]),
    ("flip_lr", ["build_augment"]),
])
def test_mix_spec_errors(spec, fragments):
    with pytest.raises(ValueError) as e:
        A.build_mix(spec)
    for frag in fragments:
        assert frag in str(e.value), str(e.value)


def test_trace_time_shape_errors():
    with pytest.raises(ValueError, match="larger than the padded image"):
        A.random_crop(40, pad=2)(jax.random.key(0), _images())
    with pytest.raises(ValueError, match="eigvec is for 3 channels"):
        A.pca_lighting()(jax.random.key(0), _images(shape=(2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        A.flip_lr()(jax.random.key(0), jnp.ones((4, 4, 3)))
    with pytest.raises(ValueError, match="soft targets"):
        A.mixup()(jax.random.key(0), _images(), jnp.arange(4))


def test_ops_are_pure_partials():
    op = A.random_crop(32, pad=4)
    assert isinstance(op, functools.partial)
    assert op.keywords == {"size": (32, 32), "pad": (4, 4), "mode": "constant"}
