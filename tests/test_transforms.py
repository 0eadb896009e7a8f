"""Host transforms (jaxvision.data.transforms): torchvision's random-resized-crop sampler in
distribution, crops from the full image, timm's eval transform pixel for pixel, the models'
eval settings as timm's, determinism from the rng alone, and the config factories."""
import io
import math
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxvision.config import default_config
from jaxvision.data import decode as dec
from jaxvision.data import eval_image
from jaxvision.data.transforms import (
    AlexNetCrop,
    CenterCropEval,
    RandomResizedCrop,
    ScaleJitter,
    eval_transform,
    sample_rrc,
    shorter_side_size,
    train_transform,
)
from tests.helpers import load_experiment

_mk = load_experiment("make_jpeg_folder")
CHINA, FLOWER = 8, 9  # scikit-learn's two sample photographs


@pytest.fixture(scope="module")
def landscape():
    return _mk.photo_jpeg(CHINA, size=(180, 240), seed=3)


# ---------------------------------------------------------------------------------------
# Acceptance 3: the random-resized-crop sampler
# ---------------------------------------------------------------------------------------

def _scale_aspect(params, height, width):
    p = np.asarray(params, np.float64)  # (N, 4): top, left, h, w
    return p[:, 2] * p[:, 3] / (height * width), p[:, 3] / p[:, 2]


def test_sample_rrc_matches_torchvision_in_distribution():
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("torchvision.transforms")
    stats = pytest.importorskip("scipy.stats")
    height, width, n = 375, 500, 10_000
    rng = np.random.default_rng(0)
    ours = [sample_rrc(rng, height, width) for _ in range(n)]
    torch.manual_seed(0)
    img = torch.empty(3, height, width)
    ref = [T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]

    def wrong(rng):  # aspect uniform instead of log-uniform: a plausible mistake
        area = height * width * rng.uniform(0.08, 1.0)
        aspect = rng.uniform(3 / 4, 4 / 3)
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if w <= width and h <= height:
            return 0, 0, h, w
        return wrong(rng)
    bad = [wrong(rng) for _ in range(n)]

    s_ours, a_ours = _scale_aspect(ours, height, width)
    s_ref, a_ref = _scale_aspect(ref, height, width)
    _, a_bad = _scale_aspect(bad, height, width)
    alpha = 1e-3
    assert stats.ks_2samp(s_ours, s_ref).pvalue > alpha
    assert stats.ks_2samp(a_ours, a_ref).pvalue > alpha
    # placement too: the crop centre's relative position
    c_ours = [(t + h / 2) / height for t, _, h, _ in ours]
    c_ref = [(t + h / 2) / height for t, _, h, _ in ref]
    assert stats.ks_2samp(c_ours, c_ref).pvalue > alpha
    # the test has power: the wrong sampler's aspects are rejected
    assert stats.ks_2samp(a_bad, a_ref).pvalue < alpha


@pytest.mark.parametrize("height,width", [(10, 1000), (1000, 10), (300, 301)])
def test_sample_rrc_fallback_is_torchvision_s(height, width):
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("torchvision.transforms")
    # an area fraction no crop of these aspects can reach: always the central fallback
    scale = (0.999, 1.0) if height == 300 else (0.5, 1.0)
    ratio = (3 / 4, 4 / 3) if height != 300 else (2.0, 3.0)
    ref = T.RandomResizedCrop.get_params(torch.empty(3, height, width), list(scale), list(ratio))
    assert sample_rrc(np.random.default_rng(0), height, width, scale, ratio) == ref


def test_random_resized_crop_is_torchvision_s_crop_then_resize(landscape):
    F = pytest.importorskip("torchvision.transforms.functional")
    t = RandomResizedCrop(64, interpolation="bilinear", flip=False, dct=False)
    pil = Image.open(io.BytesIO(landscape)).convert("RGB")
    for seed in range(5):
        top, left, h, w = sample_rrc(np.random.default_rng(seed), 180, 240)
        ref = np.asarray(F.resized_crop(pil, top, left, h, w, [64, 64],
                                        F.InterpolationMode.BILINEAR))
        out = t(landscape, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - ref).mean() < 0.05


def test_dct_scaled_crops_approximate_full_resolution_crops(landscape):
    # 180x240 image, 32x32 output: crops of >= 64 pixels decode downscaled
    fast, slow = RandomResizedCrop(32), RandomResizedCrop(32, dct=False)
    for seed in range(6):
        a = fast(landscape, np.random.default_rng(seed))
        b = slow(landscape, np.random.default_rng(seed))
        assert a.shape == b.shape == (32, 32, 3)
        assert np.abs(a.astype(int) - b).mean() < 6


def _banded_jpeg():
    """A photograph whose outer 40 columns on each side are pure magenta: the content that
    resizing the shorter side to 180 and centre-cropping 180x180 would remove."""
    img = np.asarray(Image.open(io.BytesIO(_mk.photo_jpeg(FLOWER, (180, 260), seed=0))))
    img = img.copy()
    img[:, :40] = img[:, -40:] = (255, 0, 255)
    return _mk.encode(Image.fromarray(img))


def _has_band(img):
    px = img.reshape(-1, 3).astype(int)
    return bool(np.any((px[:, 0] > 200) & (px[:, 1] < 70) & (px[:, 2] > 200)))


@pytest.mark.parametrize("transform", [RandomResizedCrop(48), ScaleJitter(48, 60, 120)])
def test_crops_are_taken_from_the_full_image(transform):
    data = _banded_jpeg()
    assert not _has_band(CenterCropEval(180, 1.0)(data))  # a centre pre-crop loses the band
    hits = sum(_has_band(transform(data, np.random.default_rng([0, s, 0]))) for s in range(40))
    assert 8 <= hits < 40, hits  # some crops reach the border content, not all


def test_scale_jitter_equals_resize_then_crop(landscape):
    t = ScaleJitter(64, 90, 150, "bilinear", flip=False, dct=False)
    full = dec.decode(landscape)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        short = int(rng.integers(90, 151))
        rh, rw = shorter_side_size(180, 240, short)
        top, left = int(rng.integers(0, rh - 63)), int(rng.integers(0, rw - 63))
        ref = dec.resize(full, (rh, rw), "bilinear")[top:top + 64, left:left + 64]
        out = t(landscape, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - ref).mean() < 2.0  # only the borders' filter taps


def test_alexnet_crop_stays_in_the_centre_square(landscape):
    data = _banded_jpeg()  # 180x260: the centre 180x180 square excludes the band
    t = AlexNetCrop(size=160, resize=180)
    assert not any(_has_band(t(data, np.random.default_rng(s))) for s in range(10))
    assert t(landscape, np.random.default_rng(0)).shape == (160, 160, 3)


@pytest.mark.parametrize("make", [lambda: RandomResizedCrop(40), lambda: ScaleJitter(40, 48, 90),
                                  lambda: AlexNetCrop(40, 48)])
def test_randomness_comes_from_the_rng_alone(make, landscape):
    t = make()
    t2 = pickle.loads(pickle.dumps(t))  # worker processes receive a pickled copy
    a = t(landscape, np.random.default_rng([7, 3, 11]))
    b = t2(landscape, np.random.default_rng([7, 3, 11]))
    np.testing.assert_array_equal(a, b)
    others = [t(landscape, np.random.default_rng([7, 3, k])) for k in range(12, 16)]
    assert any(not np.array_equal(a, o) for o in others)
    assert a.dtype == np.uint8 and a.shape == (40, 40, 3) and a.flags.c_contiguous


def test_grayscale_jpeg_through_a_transform_is_rgb():
    gray = _mk.photo_jpeg(CHINA, (100, 120), mode="L")
    out = RandomResizedCrop(32)(gray, np.random.default_rng(0))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_faulty_file_names_its_path(landscape):
    from jaxvision.data.sources import DataError
    cut = landscape[: len(landscape) // 3]
    with pytest.raises(DataError, match="n01440764/x.JPEG"):
        RandomResizedCrop(32)(cut, np.random.default_rng(0), path="n01440764/x.JPEG")
    with pytest.raises(DataError, match="n01440764/x.JPEG"):
        CenterCropEval(32)(b"GIF89a broken", path="n01440764/x.JPEG")


# ---------------------------------------------------------------------------------------
# Acceptance 2: the eval transform is timm's
# ---------------------------------------------------------------------------------------

def _timm_eval(name, data):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    import timm.data
    with torch.device("meta"):  # architecture only: no memory, no initialisation
        model = timm.create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=model)
    tf = timm.data.create_transform(**cfg, is_training=False)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    for t in tf.transforms:
        if type(t).__name__ in ("ToTensor", "MaybeToTensor", "Normalize"):
            break
        img = t(img)
    return np.asarray(img), cfg


@pytest.mark.parametrize("name", ["resnet50", "vit_base_patch16_224", "convnext_tiny"])
def test_eval_image_equals_timm_eval_transform(name, tmp_path):
    for k, size in enumerate([(375, 500), (333, 250)]):  # landscape and portrait
        data = _mk.photo_jpeg(CHINA + k, size, seed=k)
        ref, cfg = _timm_eval(name, data)
        path = tmp_path / f"img{k}.JPEG"
        path.write_bytes(data)
        for arg in (str(path), data):
            ours = eval_image(arg, name)
            assert ours.shape == ref.shape == (*cfg["input_size"][1:], 3)
            assert np.abs(ours / 255.0 - ref / 255.0).mean() <= 1 / 255


def test_model_eval_settings_are_timm_s():
    timm = pytest.importorskip("timm")
    import jaxvision
    from jaxvision.registry import model_cfg
    checked = 0
    for name in jaxvision.list_models():
        pcfg = None if name.startswith("test_") else timm.models.get_pretrained_cfg(name)
        if pcfg is None:  # timm's test_* models are other networks; torchvision-only ones
            assert model_cfg(name)["interpolation"] == "bilinear", name
            continue
        d, ours = pcfg.to_dict(), model_cfg(name)
        h, w, c = ours["input_size"]
        assert (ours["interpolation"], ours["crop_mode"], (c, h, w)) == (
            d["interpolation"], d.get("crop_mode", "center"), tuple(d["input_size"])), name
        assert ours["crop_pct"] == pytest.approx(d["crop_pct"]), name
        checked += 1
    assert checked > 50


# ---------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------

def test_factories_read_the_config():
    c = default_config()
    assert train_transform(c.dataset, "resnet50") == RandomResizedCrop(224)
    c.dataset.train_transform = "scale_jitter"
    c.dataset.scale_jitter = (300, 400)
    c.dataset.flip = False
    assert train_transform(c.dataset, "resnet50") == ScaleJitter(224, 300, 400, flip=False)
    c.dataset.train_transform = "alexnet"
    assert train_transform(c.dataset, "alexnet") == AlexNetCrop(224, 256, flip=False)
    assert eval_transform(c.dataset, "resnet50") == CenterCropEval(224, 0.95, "bicubic")
    assert eval_transform(c.dataset, "vgg16_c") == CenterCropEval(224, 0.875, "bilinear")
    c.dataset.crop_pct, c.dataset.interpolation = 0.875, "bilinear"
    assert eval_transform(c.dataset, "resnet50") == CenterCropEval(224, 0.875, "bilinear")
    c.dataset.train_transform = "random_crops"
    with pytest.raises(ValueError, match="train_transform must be one of"):
        train_transform(c.dataset, "resnet50")
    with pytest.raises(ValueError, match="interpolation"):
        CenterCropEval(224, 0.9, "cubic")
    with pytest.raises(ValueError, match="s_min"):
        ScaleJitter(224, 200, 480)
