"""Decoding encoded images (jaxvision.data.decode): libjpeg-turbo JPEGs equal Pillow's,
DCT-domain downscaling approximates a full decode + resize, grayscale / CMYK / PNG / alpha
are converted, and faulty data is a DataError naming its file."""
import io

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import decode as dec
from jaxvision.data.sources import DataError
from tests.helpers import load_experiment

_mk = load_experiment("make_jpeg_folder")


@pytest.fixture(scope="module")
def jpeg():
    return _mk.photo_jpeg(0, size=(240, 320), seed=1)


def pil_rgb(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_jpeg_equals_pillow_decode(jpeg):
    out = dec.decode(jpeg)
    assert out.dtype == np.uint8 and out.shape == (240, 320, 3)
    assert np.abs(out.astype(int) - pil_rgb(jpeg)).mean() < 0.05
    assert dec.image_size(jpeg) == (240, 320)
    luma = dec.decode(jpeg, channels=1)
    assert luma.shape == (240, 320, 1)


def test_dct_scaled_decode_approximates_full_decode_and_resize(jpeg):
    small = dec.decode(jpeg, min_size=(60, 80))
    assert small.shape == (60, 80, 3)  # decoded at 1/4 scale, not resized afterwards
    full = dec.decode(jpeg)
    # scaling in the DCT domain averages blocks: close to a box-filter resize of the full
    # decode, further from bilinear, and far closer to either than a one-pixel shift
    box = dec.resize(full, (60, 80), "box")
    bilinear = dec.resize(full, (60, 80), "bilinear")
    mad_box = np.abs(small.astype(int) - box).mean()
    mad_bilinear = np.abs(small.astype(int) - bilinear).mean()
    shift = np.abs(box[:, 1:].astype(int) - box[:, :-1]).mean()
    assert mad_box < 1.5 and mad_bilinear < 5 and shift > 4 * mad_bilinear, (
        mad_box, mad_bilinear, shift)
    # a size between the M/8 scales: the smallest scale that keeps both sides large enough
    mid = dec.decode(jpeg, min_size=(100, 100))
    assert mid.shape[0] >= 100 and mid.shape[1] >= 100 and mid.shape[0] < 240


def test_dct_min_size_only_when_crop_is_twice_the_output():
    assert dec.dct_min_size(400, 500, 300, 300, 224, 224) is None
    assert dec.dct_min_size(400, 500, 448, 460, 224, 224) == (200, 250)
    assert dec.dct_min_size(1000, 1000, 900, 600, 224, 224) == (374, 374)


def test_grayscale_and_cmyk_jpegs_come_out_rgb():
    rgb = Image.open(io.BytesIO(_mk.photo_jpeg(1, size=(96, 128)))).convert("RGB")
    gray = _mk.encode(rgb, "L")
    cmyk = _mk.encode(rgb, "CMYK")
    g = dec.decode(gray)
    assert g.shape == (96, 128, 3)
    np.testing.assert_array_equal(g[..., 0], g[..., 1])
    np.testing.assert_array_equal(g[..., 0], np.asarray(Image.open(io.BytesIO(gray))))
    c = dec.decode(cmyk)
    assert c.shape == (96, 128, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, pil_rgb(cmyk))
    # and the colours survive the CMYK round trip (not inverted, not garbage)
    assert np.abs(c.astype(int) - np.asarray(rgb)).mean() < 6
    # DCT scaling works on the Pillow path as well (draft mode)
    assert dec.decode(cmyk, min_size=(48, 64)).shape == (48, 64, 3)


def test_truncated_jpeg_and_non_image_raise_dataerror_naming_the_file(jpeg):
    with pytest.raises(DataError, match=r"/data/cut\.JPEG"):
        dec.decode(jpeg[: len(jpeg) // 2], path="/data/cut.JPEG")
    with pytest.raises(DataError, match=r"/data/notes\.JPEG.*not an image"):
        dec.decode(b"these are not the pixels you are looking for", path="/data/notes.JPEG")
    with pytest.raises(DataError, match=r"/data/notes\.JPEG"):
        dec.image_size(b"plain text", path="/data/notes.JPEG")
    with pytest.raises(DataError, match=r"empty\.png"):
        dec.decode(b"", path="empty.png")


@pytest.mark.parametrize("crop", [(50, 70), (120, 100), (240, 320)])
def test_resize_equals_pillow(jpeg, crop):
    # enlarging bilinear resizes take OpenCV's path; they must stay Pillow's pixels
    img = dec.decode(jpeg)[: crop[0], : crop[1]]
    for size, interp in [((224, 224), "bilinear"), ((96, 200), "bilinear"),
                         ((224, 224), "bicubic")]:
        ref = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
            size[::-1], dec.INTERPOLATIONS[interp]))
        diff = np.abs(dec.resize(img, size, interp).astype(int) - ref)
        assert diff.max() <= 1 and diff.mean() < 0.3, (size, interp, diff.mean())
    gray = dec.resize(img[..., :1], (224, 224))
    assert gray.shape == (224, 224, 1)
    # 'area' (OpenCV, training only): antialiased, so near Pillow's bilinear filter and
    # much nearer than OpenCV's plain (aliasing) bilinear when shrinking
    import cv2
    for size in [(224, 224), (40, 60)]:
        ref = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
            size[::-1], Image.Resampling.BILINEAR))
        out = dec.resize(img, size, "area")
        aliased = cv2.resize(np.ascontiguousarray(img), size[::-1],
                             interpolation=cv2.INTER_LINEAR)
        mad = np.abs(out.astype(int) - ref).mean()
        assert out.shape == (*size, 3) and mad < 4, mad
        if size[0] < img.shape[0] / 2:
            assert mad < 0.7 * np.abs(aliased.astype(int) - ref).mean()


def test_jpeg_with_a_recoverable_fault_decodes_as_pillow_does(jpeg):
    # libjpeg-turbo warns about stray bytes before the end-of-image marker (as in a few
    # ImageNet files); Pillow decodes such files, and so must the pipeline
    odd = jpeg[:-2] + b"\x00\x00\x00" + jpeg[-2:]
    np.testing.assert_array_equal(dec.decode(odd), pil_rgb(odd))


def test_png_and_alpha_through_pillow():
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 128
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    out = dec.decode(buf.getvalue(), min_size=(2, 2))  # min_size: no effect off JPEG
    assert out.shape == (8, 10, 3)
    np.testing.assert_array_equal(out[..., 0], (200 * 128 + 127) // 255)
    np.testing.assert_array_equal(out[..., 1:], 0)
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(buf, "PNG")
    np.testing.assert_array_equal(dec.decode(buf.getvalue()), 255)


def test_docs_table_matches_the_results_file():
    import json
    import os
    bench = load_experiment("decode_bench")
    with open(os.path.join(os.path.dirname(bench.DOCS), os.pardir, "experiments", "results",
                           "decoders_cpu.json")) as f:
        result = json.load(f)
    with open(bench.DOCS) as f:
        assert bench.render_table(result) in f.read(), (
            "docs/data.md is stale: run python experiments/decode_bench.py --docs")


def test_make_jpeg_folder_writes_imagenet_like_photographs(tmp_path):
    pytest.importorskip("skimage")  # the generator's other photographs
    sizes = np.array([_mk.sample_size(np.random.default_rng([5, i])) for i in range(4000)])
    assert 330 <= sizes[:, 0].mean() <= 380 and 375 <= sizes[:, 1].mean() <= 430
    assert (sizes[:, 1] > sizes[:, 0]).mean() > 0.6  # mostly landscape
    _mk.main([str(tmp_path), "--images", "12", "--classes", "3", "--gray-fraction", "0.25",
              "--cmyk-fraction", "0.25", "--seed", "1"])
    files = sorted(tmp_path.glob("c*/*.JPEG"))
    assert len(files) == 12 and sorted({f.parent.name for f in files}) == ["c000", "c001", "c002"]
    modes = set()
    for f in files:
        data = f.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            modes.add(img.mode)
        out = dec.decode(data, path=str(f))
        assert out.ndim == 3 and out.shape[-1] == 3 and out.std() > 10  # a photograph
    assert modes == {"RGB", "L", "CMYK"}


def test_decoder_setting_chooses_the_jpeg_library_and_names_what_is_missing(jpeg, monkeypatch):
    from jaxvision.config import default_config
    from jaxvision.data import transforms
    ds = default_config().dataset
    ds.decoder = "pillow"
    t = transforms.eval_transform(ds, "resnet18")
    assert t.decoder == "pillow"
    # Pillow decodes with libjpeg-turbo too: the same pixels up to rounding
    assert np.abs(t(jpeg).astype(int) - transforms.eval_image(jpeg, "resnet18")).mean() < 0.5
    ds.decoder = "dali"
    with pytest.raises(ValueError, match=r"dataset.decoder must be one of \['libjpeg-turbo'"):
        transforms.train_transform(ds, "resnet18")
    ds.decoder = "libjpeg-turbo"
    monkeypatch.setattr(dec, "simplejpeg", None)
    with pytest.raises(DataError, match="pip install simplejpeg"):
        transforms.train_transform(ds, "resnet18")
    ds.decoder = "pillow"  # needs no simplejpeg
    out = transforms.train_transform(ds, "resnet18")(jpeg, np.random.default_rng(0))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
