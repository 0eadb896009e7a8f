"""Spatial transformer layer, ST-CNN and the distorted-MNIST generator.

Golden count: stn_cnn_mnist = 111,738, from the layer sizes documented in
jaxvision/models/stn.py (no timm/torchvision reference exists): localisation convs
520 + 10,020, FC 50 16,050, theta 306; classifier convs 2,624 + 50,208, head 32,010.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision
from jaxvision.data.distort import MODES, distort
from jaxvision.layers.spatial_transformer import (SpatialTransformer, affine_grid,
                                                  grid_sample)
from jaxvision.utils import param_count, param_shapes


def _rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# ------------------------------------------------------------------------------ sampler


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_theta_reproduces_input(align_corners):
    img = _rand((2, 7, 9, 3))
    theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 1, 1))
    out = grid_sample(img, affine_grid(theta, img.shape, align_corners), align_corners)
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_grid_convention_pixel_centres():
    # align_corners=False: -1/+1 are outer pixel edges, centres at (2j + 1)/W - 1.
    theta = jnp.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    g = affine_grid(theta, (2, 4), align_corners=False)
    np.testing.assert_allclose(g[0, 0, :, 0], [-0.75, -0.25, 0.25, 0.75], atol=1e-7)
    np.testing.assert_allclose(g[0, :, 0, 1], [-0.5, 0.5], atol=1e-7)
    g = affine_grid(theta, (2, 4), align_corners=True)
    np.testing.assert_allclose(g[0, 0, :, 0], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)


def test_translation_shifts_by_whole_pixels_and_pads_with_zeros():
    img = _rand((1, 5, 6, 2))
    # Source x = target x + 2/W: output column j reads input column j + 1.
    theta = jnp.array([[[1.0, 0, 2.0 / 6], [0, 1.0, 0]]])
    out = grid_sample(img, affine_grid(theta, img.shape))
    np.testing.assert_allclose(out[:, :, :-1], img[:, :, 1:], atol=1e-5)
    np.testing.assert_allclose(out[:, :, -1], 0.0, atol=1e-6)


def test_sampling_far_outside_gives_zero_value_and_zero_gradient():
    img = _rand((1, 4, 4, 1))
    grid = jnp.full((1, 3, 3, 2), 5.0)
    out, vjp = jax.vjp(lambda u, g: grid_sample(u, g), img, grid)
    gu, gg = vjp(jnp.ones_like(out))
    assert np.all(np.asarray(out) == 0) and np.all(np.asarray(gu) == 0)
    assert np.all(np.asarray(gg) == 0)


def _paper_grads(u, xs, ys):
    """Eqs. (6)-(7) of the paper transcribed literally for one channel of one image:
    dV/dU_nm and dV/dx_s, dV/dy_s at each sample point (pixel-index coordinates)."""
    h, w = u.shape
    dv_du = np.zeros((len(xs), h, w))
    dv_dx = np.zeros(len(xs))
    dv_dy = np.zeros(len(xs))
    for i, (x, y) in enumerate(zip(xs, ys)):
        for n in range(h):
            for m in range(w):
                kx, ky = max(0.0, 1 - abs(x - m)), max(0.0, 1 - abs(y - n))
                dv_du[i, n, m] = kx * ky
                if abs(m - x) < 1:
                    dv_dx[i] += u[n, m] * ky * (1.0 if m >= x else -1.0)
                if abs(n - y) < 1:
                    dv_dy[i] += u[n, m] * kx * (1.0 if n >= y else -1.0)
    return dv_du, dv_dx, dv_dy


def test_gradients_match_the_paper_formulas():
    rng = np.random.default_rng(1)
    h, w = 5, 6
    u = rng.standard_normal((h, w)).astype(np.float32)
    # Sample points with fractional parts away from the kinks at integers, some beyond
    # the border (zero padding).
    xs = rng.integers(-1, w, 8) + rng.uniform(0.2, 0.8, 8)
    ys = rng.integers(-1, h, 8) + rng.uniform(0.2, 0.8, 8)
    # Pixel coordinates -> normalised (align_corners=False).
    grid = np.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], -1).reshape(1, 1, 8, 2)
    img = jnp.asarray(u)[None, :, :, None]
    grid = jnp.asarray(grid, jnp.float32)

    dv_du, dv_dx, dv_dy = _paper_grads(u, xs, ys)
    for i in range(8):
        gu, gg = jax.grad(lambda a, g: grid_sample(a, g)[0, 0, i, 0], argnums=(0, 1))(img, grid)
        np.testing.assert_allclose(gu[0, :, :, 0], dv_du[i], atol=1e-5)
        # d/d(normalised x) = d/d(pixel x) * W / 2.
        np.testing.assert_allclose(gg[0, 0, i], [dv_dx[i] * w / 2, dv_dy[i] * h / 2],
                                   rtol=1e-4, atol=1e-5)


def test_gradients_match_central_differences():
    rng = np.random.default_rng(2)
    img = _rand((2, 6, 5, 2), seed=3)
    h, w = 6, 5
    # Points well inside cells: fractional parts in [0.3, 0.7], finite-difference step
    # 0.05 px, so the piecewise-bilinear sampler is smooth over the stencil.
    px = rng.integers(-1, w, (2, 3, 4)) + rng.uniform(0.3, 0.7, (2, 3, 4))
    py = rng.integers(-1, h, (2, 3, 4)) + rng.uniform(0.3, 0.7, (2, 3, 4))
    grid = jnp.asarray(np.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1), jnp.float32)
    cot = _rand((2, 3, 4, 2), seed=4)

    def loss(u, g):
        return jnp.sum(grid_sample(u, g) * cot)

    gu, gg = jax.grad(loss, argnums=(0, 1))(img, grid)
    eps_px = 0.05
    for idx in [(0, 0, 0, 0), (0, 1, 2, 1), (1, 2, 3, 0), (1, 0, 1, 1), (0, 2, 3, 1)]:
        eps = eps_px * 2.0 / (w if idx[-1] == 0 else h)
        d = jnp.zeros_like(grid).at[idx].set(eps)
        fd = (loss(img, grid + d) - loss(img, grid - d)) / (2 * eps)
        np.testing.assert_allclose(gg[idx], fd, rtol=2e-3, atol=2e-3)
    for idx in [(0, 0, 0, 0), (1, 3, 2, 1), (0, 5, 4, 0), (1, 2, 2, 0)]:
        d = jnp.zeros_like(img).at[idx].set(0.5)
        fd = (loss(img + d, grid) - loss(img - d, grid)) / 1.0
        np.testing.assert_allclose(gu[idx], fd, rtol=2e-3, atol=2e-3)


@pytest.mark.torch
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_torch_affine_grid_and_grid_sample(align_corners):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    img = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)  # NCHW for torch
    theta = (np.array([[1.0, 0, 0], [0, 1.0, 0]]) + 0.4 * rng.standard_normal((2, 2, 3)))
    theta = theta.astype(np.float32)
    tg = F.affine_grid(torch.from_numpy(theta), (2, 3, 5, 9), align_corners=align_corners)
    tout = F.grid_sample(torch.from_numpy(img), tg, mode="bilinear", padding_mode="zeros",
                         align_corners=align_corners)
    grid = affine_grid(jnp.asarray(theta), (5, 9), align_corners)
    np.testing.assert_allclose(grid, tg.numpy(), atol=1e-5)
    out = grid_sample(jnp.asarray(img.transpose(0, 2, 3, 1)), grid, align_corners)
    np.testing.assert_allclose(out, tout.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="theta of shape"):
        affine_grid(jnp.zeros((2, 3, 3)), (4, 4))
    with pytest.raises(ValueError, match="grid"):
        grid_sample(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 3)))


# ------------------------------------------------------------------------------ module


def test_spatial_transformer_starts_as_identity():
    import flax.linen as nn

    class Loc(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.relu(nn.Dense(5)(x.reshape(x.shape[0], -1)))

    st = SpatialTransformer(Loc())
    x = _rand((2, 6, 6, 2))
    variables = st.init(jax.random.key(0), x)
    assert set(variables) == {"params"}  # nothing sown at init
    theta_p = variables["params"]["theta"]
    assert np.all(np.asarray(theta_p["kernel"]) == 0)
    np.testing.assert_array_equal(theta_p["bias"], [1, 0, 0, 0, 1, 0])
    out, state = st.apply(variables, x, mutable=["intermediates"])
    np.testing.assert_allclose(out, x, atol=1e-5)
    theta = state["intermediates"]["affine"][0]
    np.testing.assert_allclose(theta, np.tile([[1, 0, 0], [0, 1, 0]], (2, 1, 1)))


def test_stn_cnn_shapes_and_golden_count():
    model = jaxvision.create_model("stn_cnn_mnist")
    assert param_count(model, (42, 42, 1)) == 111_738
    shapes = param_shapes(model, (42, 42, 1))
    assert shapes["localization"]["fc"]["kernel"].shape == (320, 50)
    assert shapes["fc"]["kernel"].shape == (3200, 10)
    tiny = jaxvision.create_model("test_stn")
    x = _rand((2, 28, 28, 1))
    v = tiny.init(jax.random.key(0), x)
    assert tiny.apply(v, x).shape == (2, 10)
    feats = jaxvision.create_model("test_stn", num_classes=0)
    assert feats.apply(v, x).ndim == 2


# ------------------------------------------------------------------------------ distort


def _digits(b=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((b, 28, 28, 1), np.uint8)
    x[:, 6:22, 10:18] = rng.integers(50, 256, (b, 16, 8, 1))
    return x


@pytest.mark.parametrize("mode,size", [("R", 28), ("RTS", 42), ("P", 28), ("TC", 60)])
def test_distort_shapes_dtype_determinism(mode, size):
    x = _digits()
    a = distort(jax.random.key(0), x, mode)
    b = distort(jax.random.key(0), x, mode)
    c = distort(jax.random.key(1), x, mode)
    assert a.shape == (3, size, size, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    f = distort(jax.random.key(0), x.astype(np.float32) / 255.0, mode)
    assert f.dtype == np.float32 and f.shape == a.shape
    jitted = jax.jit(distort, static_argnums=2)(jax.random.key(0), x, mode)
    np.testing.assert_array_equal(jitted, a)


def test_distort_identity_settings_centre_the_digit():
    x = _digits()
    key = jax.random.key(3)
    np.testing.assert_array_equal(distort(key, x, "R", max_degrees=0.0), x)
    rts = distort(key, x, "RTS", max_degrees=0.0, scale_range=(1.0, 1.0), max_shift=0.0)
    np.testing.assert_array_equal(rts, np.pad(x, ((0, 0), (7, 7), (7, 7), (0, 0))))
    p = distort(key, x, "P", corner_std=0.0, scale_range=(1.0, 1.0))
    assert np.abs(p.astype(int) - x.astype(int)).max() <= 1
    tc = distort(key, x, "TC", num_clutter=0, max_shift=0)
    np.testing.assert_array_equal(tc, np.pad(x, ((0, 0), (16, 16), (16, 16), (0, 0))))


def test_distort_rotation_preserves_mass_roughly_and_rts_moves_digits():
    x = _digits(8).astype(np.float32)
    r = distort(jax.random.key(0), x, "R")
    np.testing.assert_allclose(r.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.1)
    rts = np.asarray(distort(jax.random.key(0), x, "RTS"))
    ys, xs = np.meshgrid(np.arange(42), np.arange(42), indexing="ij")
    cx = (rts[..., 0] * xs).sum((1, 2)) / rts[..., 0].sum((1, 2))
    assert np.ptp(cx) > 1.0  # random placement, not all at the centre


def test_clutter_comes_from_other_digits():
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1] = 1.0  # digit 0 is blank, so any ink on its canvas is clutter from digit 1
    tc = np.asarray(distort(jax.random.key(0), x, "TC", num_clutter=3, clutter_size=8,
                            max_shift=0))
    assert 0 < tc[0].sum() <= 3 * 64 and np.all(np.isin(tc[0], [0.0, 1.0]))
    np.testing.assert_array_equal(tc[1, 16:44, 16:44], 1.0)  # clutter never erases


def test_distort_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown distortion mode"):
        distort(jax.random.key(0), _digits(), "XYZ")
    with pytest.raises(ValueError, match="elastic"):
        distort(jax.random.key(0), _digits(), "E")
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        distort(jax.random.key(0), np.zeros((28, 28)), "R")
    assert set(MODES) == {"R", "RTS", "P", "TC"}


def test_distort_images_is_a_fixed_test_set():
    from jaxvision.data.distort import distort_images
    digits = (np.asarray(_digits()) * 255).astype(np.uint8)
    digits = np.concatenate([digits] * 5)  # more than one chunk below
    a = distort_images(digits, "RTS", seed=0, chunk=3)
    b = distort_images(digits, "RTS", seed=0, chunk=3)
    c = distort_images(digits, "RTS", seed=1, chunk=3)
    assert a.shape == (len(digits), 42, 42, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # The first chunk does not depend on how many images follow it.
    np.testing.assert_array_equal(distort_images(digits[:3], "RTS", seed=0, chunk=3), a[:3])
    with pytest.raises(ValueError, match="did you mean 'RTS'"):
        distort_images(digits, "rts")
    with pytest.raises(ValueError, match="uint8"):
        distort_images(digits.astype(np.float32), "RTS")


def test_training_on_distorted_digits(tmp_path):
    """dataset.distort: the held-out digits become one fixed 42x42 RTS set, the training
    digits are distorted afresh each step, and an ST-CNN trains on them end to end."""
    from jaxvision import train
    from jaxvision.data import pipeline
    from tests.helpers import tiny_config

    cfg = tiny_config(model="test_stn", num_train_steps=2, eval_every_steps=2,
                      checkpoint_every_steps=2, **{"dataset.distort": "RTS"})
    data = pipeline.load_datasets(cfg.dataset, None, (28, 28, 1))
    assert data.train.image_shape == (28, 28, 1)
    assert data.eval.image_shape == (42, 42, 1) and len(data.eval) == 1000
    again = pipeline.load_datasets(cfg.dataset, None, (28, 28, 1))
    np.testing.assert_array_equal(data.eval.images, again.eval.images)
    result = train.train_and_evaluate(cfg, str(tmp_path))
    assert result["eval_count"] == 1000 and np.isfinite(result["eval_loss"])

    bad = tiny_config(**{"dataset.distort": "RTZ"})
    with pytest.raises(pipeline.DataError, match="did you mean 'RTS'"):
        train.train_and_evaluate(bad, str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "checkpoints").exists()
