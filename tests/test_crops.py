"""Tests for jaxvision.data.crops: evaluation views and prediction averaging."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxvision.data import crops as C


def _distinct(shape):
    return jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(5, 12), w=st.integers(5, 12), pct=st.floats(0.3, 1.0))
def test_center_crop_is_the_central_window(h, w, pct):
    x = _distinct((2, h, w, 1))
    out = np.asarray(C.center_crop(x, pct))
    th, tw = max(1, round(h * pct)), max(1, round(w * pct))
    assert out.shape == (2, th, tw, 1)
    top, left = round((h - th) / 2), round((w - tw) / 2)
    np.testing.assert_array_equal(out, np.asarray(x)[:, top:top + th, left:left + tw])
    # Centred: the margins on the two sides differ by at most one pixel.
    assert abs((h - th - top) - top) <= 1 and abs((w - tw - left) - left) <= 1


def test_center_crop_explicit_size_and_errors():
    x = _distinct((1, 8, 10, 2))
    assert C.center_crop(x, size=(4, 6)).shape == (1, 4, 6, 2)
    with pytest.raises(ValueError, match="crop_pct"):
        C.center_crop(x, 1.5)
    with pytest.raises(ValueError, match="larger than the images"):
        C.center_crop(x, size=9)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        C.center_crop(x[0], 0.5)


def test_five_and_ten_crop_match_torchvision():
    torch = pytest.importorskip("torch")
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = _distinct((2, 9, 11, 3))
    size = (4, 5)
    views = np.asarray(C.ten_crop(x, size))
    assert views.shape == (10, 2, 4, 5, 3)
    ref = tvf.ten_crop(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), list(size))
    ref = np.stack([r.permute(0, 2, 3, 1).numpy() for r in ref])
    np.testing.assert_array_equal(views, ref)
    np.testing.assert_array_equal(np.asarray(C.five_crop(x, size)), ref[:5])


def test_ten_crop_views_are_windows_and_mirrors():
    # Independent of torchvision: corners sit at the corners, the last five are crops of
    # the mirrored image, and every view is distinct.
    x = _distinct((1, 8, 8, 1))
    v = np.asarray(C.ten_crop(x, 5))[:, 0, ..., 0]
    xn = np.asarray(x)[0, ..., 0]
    np.testing.assert_array_equal(v[0], xn[:5, :5])
    np.testing.assert_array_equal(v[3], xn[3:, 3:])
    np.testing.assert_array_equal(v[5], xn[:, ::-1][:5, :5])
    np.testing.assert_array_equal(v[6], xn[:, ::-1][:5, 3:])
    assert len({arr.tobytes() for arr in v}) == 10


def test_ten_crop_jit_matches_eager():
    x = jax.random.uniform(jax.random.key(0), (2, 10, 10, 3))
    f = functools.partial(C.ten_crop, size=7)
    np.testing.assert_array_equal(jax.jit(f)(x), f(x))


def test_flip_tta():
    x = _distinct((3, 4, 5, 2))
    v = C.flip_tta(x)
    assert v.shape == (2, 3, 4, 5, 2)
    np.testing.assert_array_equal(v[0], x)
    np.testing.assert_array_equal(v[1], np.asarray(x)[:, :, ::-1])


def test_resize_center_crop_geometry_like_timm():
    # size 14 at crop_pct 0.5 -> shorter side floor(14 / 0.5) = 28; a 20x30 image becomes
    # 28x42 and the centre 14x14 (offset 7, 14) is kept.  Channels hold pixel-centre
    # coordinates; bilinear upsampling reproduces such ramps exactly away from the borders.
    h, w = 20, 30
    ramp_x = np.broadcast_to((np.arange(w) + 0.5)[None, :, None], (h, w, 1))
    ramp_y = np.broadcast_to((np.arange(h) + 0.5)[:, None, None], (h, w, 1))
    x = jnp.asarray(np.concatenate([ramp_y, ramp_x], -1)[None], jnp.float32)
    out = np.asarray(C.resize_center_crop(x, 14, crop_pct=0.5))
    assert out.shape == (1, 14, 14, 2)
    scale = 28 / 20
    i = np.arange(14)
    np.testing.assert_allclose(out[0, :, 7, 0], (i + 7 + 0.5) / scale, atol=1e-4)
    np.testing.assert_allclose(out[0, 7, :, 1], (i + 14 + 0.5) / scale, atol=1e-4)
    assert C.resize_center_crop(x, (8, 6), crop_pct=1.0).shape == (1, 8, 6, 2)


def test_resize_center_crop_close_to_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.transforms")
    x = jax.random.uniform(jax.random.key(1), (2, 24, 20, 3))
    out = np.asarray(C.resize_center_crop(x, 12, crop_pct=0.75))
    t = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
    ref = tv.CenterCrop(12)(tv.Resize(16, antialias=True)(t)).permute(0, 2, 3, 1).numpy()
    assert out.shape == ref.shape
    # Both are antialiased bilinear; they differ only in filter details at the borders.
    assert np.mean(np.abs(out - ref)) < 0.02


def test_multi_scale_keeps_aspect():
    x = jax.random.uniform(jax.random.key(0), (2, 16, 24, 3))
    views = C.multi_scale(x, (8, 16, 20))
    assert [v.shape for v in views] == [(2, 8, 12, 3), (2, 16, 24, 3), (2, 20, 30, 3)]
    np.testing.assert_array_equal(views[1], x)
    # A constant image stays constant at every scale.
    const = jnp.full((1, 16, 24, 1), 0.25)
    for v in C.multi_scale(const, (8, 20)):
        np.testing.assert_allclose(v, 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="sizes"):
        C.multi_scale(x, 8)


def test_average_predictions():
    logits = jax.random.normal(jax.random.key(0), (10, 4, 7))
    probs = C.average_predictions(logits)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    ref = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, ref.mean(0), atol=1e-6)
    np.testing.assert_allclose(C.average_predictions(list(logits)), probs, atol=1e-7)
    # Averaging probabilities is not averaging logits.
    mixed = jnp.stack([jnp.array([[10.0, 0.0]]), jnp.array([[0.0, 1.0]])])
    np.testing.assert_allclose(C.average_predictions(mixed)[0, 0],
                               (jax.nn.softmax(mixed[0])[0, 0] + jax.nn.softmax(mixed[1])[0, 0])
                               / 2, atol=1e-6)
    with pytest.raises(ValueError):
        C.average_predictions([])
