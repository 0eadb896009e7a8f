"""The image-folder source: layouts, label order, decoding of every pixel format, resizing,
faulty files (rejected with their path, or skipped and counted) and concurrent reads."""
import concurrent.futures
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxvision.config import default_config
from jaxvision.data.folder import (
    CorruptImageWarning,
    FolderSource,
    decode_image,
    load_folder,
    skipped_files,
)
from jaxvision.data.loader import StepLoader, TrainBatches
from jaxvision.data.pipeline import (
    BatchOrder,
    load_datasets,
    load_examples,
    validate_split,
)
from jaxvision.data.sources import DataError


def colour(k):
    """A distinct, exactly representable RGB colour per class."""
    return np.array([(37 * k + 11) % 256, (91 * k + 200) % 256, (53 * k + 7) % 256], np.uint8)


def save(path, img, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path, **kw)
    return str(path)


def flat(k, h=8, w=8):
    return np.broadcast_to(colour(k), (h, w, 3)).copy()


def make_folder(root, counts, ext=".png", h=8, w=8):
    """root/<class>/<i><ext>, each image one flat colour that identifies its class."""
    paths = {}
    for k, (name, n) in enumerate(counts.items()):
        paths[name] = [save(os.path.join(root, name, f"{i:03d}{ext}"), flat(k, h, w))
                       for i in range(n)]
    return paths


def read_all(split):
    return [split.source[i] for i in range(len(split))]


def only_train(root, **kw):
    splits = load_folder(root, **kw)
    assert list(splits) == ["train"]
    return splits["train"]


def write_truncated(path, img, fmt, keep):
    save(path, img, format=fmt)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep(len(data))])
    return str(path)


# ---------------------------------------------------------------------------------------
# Layouts, classes, labels
# ---------------------------------------------------------------------------------------

def test_classes_sorted_and_labels_match_folders(tmp_path):
    make_folder(tmp_path, {"b": 3, "a": 2, "c10": 2, "c2": 4})
    train = only_train(tmp_path)
    src = train.source
    assert isinstance(src, FolderSource)
    assert src.classes == ["a", "b", "c10", "c2"]  # string order, as ImageFolder
    assert train.num_classes == 4 and len(train) == 11 and train.image_shape == (8, 8, 3)
    assert train.labels.dtype == np.int32
    counts = np.bincount(train.labels, minlength=4)
    np.testing.assert_array_equal(counts, [2, 3, 2, 4])
    for i, (path, label) in enumerate(src.samples):
        assert os.path.basename(os.path.dirname(path)) == src.classes[label]
        img, lab = src[i]
        assert lab == label == train.labels[i]
        assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
        # the pixels are the ones written for that class folder
        written = ["b", "a", "c10", "c2"].index(src.classes[label])
        np.testing.assert_array_equal(img, flat(written))


def test_order_is_stratified_so_the_tail_has_every_class(tmp_path):
    make_folder(tmp_path, {"x": 12, "y": 12, "z": 6})
    train = only_train(tmp_path)
    # load_datasets holds out the tail of train: it must not be a single class
    tail = train.labels[-10:]
    assert set(tail.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(np.bincount(train.labels[:10], minlength=3), [4, 4, 2])
    # within a class, files keep their sorted order
    paths = [p for p, lab in train.source.samples if lab == 0]
    assert paths == sorted(paths)


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_split_layout_shares_class_ids(tmp_path, val_name):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 2, "emu": 2})
    save(tmp_path / val_name / "dog" / "0.png", flat(1))  # colour of 'dog' in train
    save(tmp_path / "test" / "cat" / "0.png", flat(0))
    save(tmp_path / "test" / "emu" / "0.png", flat(2))
    splits = load_folder(tmp_path)
    assert sorted(splits) == ["test", "train", "validation"]
    for s in splits.values():
        assert s.num_classes == 3 and s.source.classes == ["cat", "dog", "emu"]
    val = splits["validation"]
    assert val.labels.tolist() == [1]
    img, lab = val.source[0]
    assert lab == 1
    np.testing.assert_array_equal(img, flat(1))
    assert sorted(splits["test"].labels.tolist()) == [0, 2]


def test_class_in_val_missing_from_train_is_named(tmp_path):
    make_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    save(tmp_path / "val" / "zebra" / "0.png", flat(0))
    with pytest.raises(DataError, match="zebra"):
        load_folder(tmp_path)


def test_class_named_train_among_others_is_a_class(tmp_path):
    # Pascal VOC has a class 'train': only a root of split folders alone is layout (b)
    make_folder(tmp_path, {"bus": 2, "train": 2})
    train = only_train(tmp_path)
    assert train.source.classes == ["bus", "train"]


def test_split_folders_without_train(tmp_path):
    make_folder(tmp_path / "val", {"a": 1})
    with pytest.raises(DataError, match="no 'train' folder"):
        load_folder(tmp_path)


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    save(tmp_path / "a" / ".hidden.png", flat(5))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "labels.csv").write_text("1,2")
    save(tmp_path / ".cache" / "0.png", flat(5))        # hidden class folder
    save(tmp_path / "b" / ".thumbs" / "0.png", flat(5))  # hidden sub-folder
    save(tmp_path / "b" / "nested" / "UPPER.PNG", flat(1))  # recursive, any case
    train = only_train(tmp_path)
    assert train.source.classes == ["a", "b"]
    names = sorted(os.path.relpath(p, tmp_path) for p in train.source.paths)
    assert names == ["a/000.png", "a/001.png", "b/000.png", "b/001.png", "b/nested/UPPER.PNG"]


# ---------------------------------------------------------------------------------------
# Bad folders
# ---------------------------------------------------------------------------------------

def test_root_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as e:
        load_folder(missing)
    assert str(missing) in str(e.value)


def test_root_without_class_folders(tmp_path):
    with pytest.raises(DataError, match="no class sub-folders") as e:
        load_folder(tmp_path)
    assert str(tmp_path) in str(e.value)
    save(tmp_path / "loose.png", flat(0))
    with pytest.raises(DataError, match="1 image files lie directly in it"):
        load_folder(tmp_path)


def test_root_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files") as e:
        load_folder(tmp_path)
    assert str(tmp_path / "a") in str(e.value) and "1 file(s)" in str(e.value)


def test_empty_class_folder_is_named(tmp_path):
    make_folder(tmp_path, {"a": 2, "c": 2})
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="it is empty") as e:
        load_folder(tmp_path)
    assert str(tmp_path / "b") in str(e.value)


@pytest.mark.parametrize("kw, match", [({"channels": 2}, "1 or 3 channels"),
                                       ({"image_size": (8, 0)}, "positive integers"),
                                       ({"image_size": (8,)}, "positive integers"),
                                       ({"verify": "quick"}, "verify must be one of")])
def test_bad_arguments(tmp_path, kw, match):
    make_folder(tmp_path, {"a": 1})
    with pytest.raises(DataError, match=match):
        load_folder(tmp_path, **kw)


# ---------------------------------------------------------------------------------------
# Decoding: every pixel format to the requested channels, checked on pixel values
# ---------------------------------------------------------------------------------------

def decode_in_folder(tmp_path, img, name, channels, **save_kw):
    """Put one file in a one-class folder and read it back through load_folder."""
    save(tmp_path / "k" / name, img, **save_kw)
    train = only_train(tmp_path, channels=channels, verify="full")
    out, label = train.source[0]
    assert label == 0 and out.dtype == np.uint8
    assert out.shape == (*out.shape[:2], channels)
    return out


def luma(rgb):
    """Pillow's ITU-R 601-2 conversion (integer arithmetic, rounded)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def test_grayscale_to_one_and_three_channels(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    one = decode_in_folder(tmp_path / "1", g, "g.png", 1)
    np.testing.assert_array_equal(one[..., 0], g)
    three = decode_in_folder(tmp_path / "3", g, "g.png", 3)
    for c in range(3):
        np.testing.assert_array_equal(three[..., c], g)


def test_colour_to_one_channel_is_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = decode_in_folder(tmp_path, rgb, "c.png", 1)
    np.testing.assert_allclose(out[..., 0].astype(int), luma(rgb), atol=1)


def test_one_bit_image(tmp_path):
    bits = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
    out = decode_in_folder(tmp_path, Image.fromarray(bits).convert("1"), "b.png", 3)
    np.testing.assert_array_equal(out[..., 1], bits)


def test_rgba_is_composited_onto_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :4, 3] = 255   # opaque: unchanged
    rgba[:, 4:6, 3] = 128  # half: colour * 128 / 255
    rgba[:, 6:, 3] = 0     # transparent: black, whatever colour lies under it
    out = decode_in_folder(tmp_path, rgba, "a.png", 3).astype(int)
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 4], np.rint(np.array([200, 100, 50]) * 128 / 255))
    np.testing.assert_array_equal(out[:, 6:], 0)


def test_grey_alpha_is_composited_onto_black(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0] = 180
    la[..., 1] = 255
    la[:4, :, 1] = 0
    out = decode_in_folder(tmp_path, Image.fromarray(la, "LA"), "la.png", 3)
    np.testing.assert_array_equal(out[:4], 0)
    np.testing.assert_array_equal(out[4:], 180)


def palette_image(transparent_index=None):
    img = Image.new("P", (8, 8))
    img.putpalette([255, 0, 0, 0, 0, 255, 10, 20, 30] + [0] * (256 * 3 - 9))
    for y in range(8):
        for x in range(8):
            img.putpixel((x, y), (x + y) % 3)
    if transparent_index is not None:
        img.info["transparency"] = transparent_index
    return img


@pytest.mark.parametrize("ext", [".png", ".gif", ".bmp"])
def test_palette_image(tmp_path, ext):
    out = decode_in_folder(tmp_path, palette_image(), "p" + ext, 3)
    table = np.array([[255, 0, 0], [0, 0, 255], [10, 20, 30]])
    idx = np.indices((8, 8)).sum(0) % 3
    np.testing.assert_array_equal(out, table[idx])


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_transparency_is_black(tmp_path, ext):
    out = decode_in_folder(tmp_path, palette_image(transparent_index=1), "p" + ext, 3)
    idx = np.indices((8, 8)).sum(0) % 3
    np.testing.assert_array_equal(out[idx == 1], 0)
    np.testing.assert_array_equal(out[idx == 0], np.broadcast_to([255, 0, 0], out[idx == 0].shape))
    np.testing.assert_array_equal(out[idx == 2], np.broadcast_to([10, 20, 30], out[idx == 2].shape))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink mix
    cmyk.paste((0, 0, 0, 255), (0, 8, 16, 16))           # black ink
    out = decode_in_folder(tmp_path, cmyk, "c.jpg", 3, quality=100).astype(int)
    assert Image.open(tmp_path / "k" / "c.jpg").mode == "CMYK"
    np.testing.assert_allclose(out[2, 8], [255, 0, 0], atol=6)
    np.testing.assert_allclose(out[13, 8], [0, 0, 0], atol=6)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    k = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4
    v = (257 * k).astype(np.uint16)
    v[0, 0], v[0, 1], v[0, 2] = 65535, 300, 128  # 300/257 -> 1; 128/257 -> 0 (rounded)
    save(tmp_path / "k" / "d.png", Image.fromarray(v))
    assert Image.open(tmp_path / "k" / "d.png").mode.startswith("I;16")
    out = only_train(tmp_path, channels=3, verify="full").source[0][0]
    expect = k.astype(np.uint8)
    expect[0, 0], expect[0, 1], expect[0, 2] = 255, 1, 0
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expect)


def test_thirty_two_bit_integer_tiff(tmp_path):
    v = (np.arange(16, dtype=np.int32).reshape(4, 4) * 257 * 16)
    save(tmp_path / "ok" / "k" / "i.tif", Image.fromarray(v))
    out = decode_image(str(tmp_path / "ok" / "k" / "i.tif"), channels=1)
    np.testing.assert_array_equal(out[..., 0], np.arange(16).reshape(4, 4) * 16)
    # beyond 16 bits there is no sound scale: rejected, with the path
    bad = save(tmp_path / "bad" / "k" / "i.tif", Image.fromarray(v * 100))
    with pytest.raises(DataError, match="outside the 16-bit range") as e:
        load_folder(tmp_path / "bad", verify="full")
    assert bad in str(e.value)


def test_float_image_is_refused_with_its_path(tmp_path):
    path = save(tmp_path / "k" / "f.tif", Image.fromarray(np.ones((4, 4), np.float32)))
    with pytest.raises(DataError, match="mode 'F'") as e:
        load_folder(tmp_path)
    assert path in str(e.value)


def test_png_named_jpg_decodes_by_content(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = decode_in_folder(tmp_path, rgb, "really_png.jpg", 3, format="PNG")
    np.testing.assert_array_equal(out, rgb)  # lossless: exact


@pytest.mark.parametrize("ext, kw", [(".bmp", {}), (".tif", {}), (".tiff", {}), (".ppm", {}),
                                     (".webp", {"lossless": True}), (".PNG", {})])
def test_lossless_formats_round_trip(tmp_path, ext, kw):
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_in_folder(tmp_path, rgb, "x" + ext, 3, **kw), rgb)


def test_pgm_round_trip(tmp_path):
    g = np.random.default_rng(3).integers(0, 256, (8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(decode_in_folder(tmp_path, g, "x.pgm", 1)[..., 0], g)


def test_jpeg_decodes_close_to_what_was_written(tmp_path):
    out = decode_in_folder(tmp_path, flat(3, 16, 16), "x.jpeg", 3, quality=100).astype(int)
    np.testing.assert_allclose(out, flat(3, 16, 16).astype(int), atol=3)


# ---------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------

def test_mixed_sizes_need_image_size(tmp_path):
    save(tmp_path / "a" / "0.png", flat(0, 8, 8))
    save(tmp_path / "a" / "1.png", flat(0, 8, 12))
    with pytest.raises(DataError, match="dataset.image_size"):
        load_folder(tmp_path)
    train = only_train(tmp_path, image_size=(6, 10))
    assert train.image_shape == (6, 10, 3)
    for img, _ in read_all(train):
        assert img.shape == (6, 10, 3)
        np.testing.assert_allclose(img.astype(int), flat(0, 6, 10).astype(int), atol=1)


def test_mixed_sizes_found_late_without_verification(tmp_path):
    save(tmp_path / "a" / "0.png", flat(0, 8, 8))
    save(tmp_path / "a" / "1.png", flat(0, 8, 12))
    train = only_train(tmp_path, verify="none", skip_corrupt=True)
    assert train.image_shape == (8, 8, 3)  # from the first file
    bad = next(i for i, p in enumerate(train.source.paths) if p.endswith("1.png"))
    # a size mismatch is configuration, not corruption: raised even in skip mode
    with pytest.raises(DataError, match="dataset.image_size"):
        train.source[bad]


def test_resize_shorter_side_then_centre_crop(tmp_path):
    bands = np.zeros((16, 48, 3), np.uint8)
    bands[:, :16] = (255, 0, 0)
    bands[:, 16:32] = (0, 255, 0)
    bands[:, 32:] = (0, 0, 255)
    save(tmp_path / "a" / "wide.png", bands)
    out = only_train(tmp_path, image_size=(8, 8)).source[0][0]
    # 16x48 -> 8x24 -> centre 8x8 is the green band (bilinear edges blend a little)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[:, 2:6], np.broadcast_to([0, 255, 0], (8, 4, 3)))
    tall = np.zeros((40, 10), np.uint8)
    tall[15:25] = 200
    save(tmp_path / "b" / "tall.png", tall)
    save(tmp_path / "b" / "tiny.png", np.full((2, 3), 77, np.uint8))  # upscaled
    train = only_train(tmp_path, image_size=(5, 5), channels=1)
    outs = {os.path.basename(p): train.source[i][0] for i, p in enumerate(train.source.paths)}
    assert outs["tall.png"].shape == (5, 5, 1)
    # 40x10 -> 20x5, centre rows 7.5..12.5 of the band 7.5..12.5
    assert outs["tall.png"][1:4, :, 0].min() >= 190
    np.testing.assert_array_equal(outs["tiny.png"], 77)


# ---------------------------------------------------------------------------------------
# Faulty files
# ---------------------------------------------------------------------------------------

def noisy(seed=0, h=16, w=16):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def fault_truncated_jpeg(path):
    # the header is intact, so PIL's own verify() passes; only the end is lost
    return write_truncated(path.with_suffix(".jpg"), noisy(), "JPEG", lambda n: n - 120)


def fault_truncated_png(path):
    return write_truncated(path.with_suffix(".png"), noisy(), "PNG", lambda n: n // 2)


def fault_zero_bytes(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_suffix(".jpg")
    path.write_bytes(b"")
    return str(path)


def fault_text_as_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_suffix(".png")
    path.write_text("this is not an image\n" * 20)
    return str(path)


def fault_png_magic_then_garbage(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_suffix(".png")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return str(path)


def fault_broken_link(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_suffix(".jpg")
    os.symlink(path.parent / "nowhere.jpg", path)
    return str(path)


FAULTS = [fault_truncated_jpeg, fault_truncated_png, fault_zero_bytes, fault_text_as_png,
          fault_png_magic_then_garbage, fault_broken_link]


@pytest.mark.parametrize("verify", ["header", "full"])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__[6:])
def test_faulty_file_is_named_at_load(tmp_path, fault, verify):
    make_folder(tmp_path, {"a": 2, "b": 2}, h=16, w=16)
    bad = fault(tmp_path / "b" / "zz_bad")
    with pytest.raises(DataError, match="faulty image file") as e:
        load_folder(tmp_path, verify=verify)
    assert bad in str(e.value) and "skip_corrupt" in str(e.value)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__[6:])
def test_faulty_file_is_named_when_read_without_verification(tmp_path, fault):
    make_folder(tmp_path, {"a": 2, "b": 2}, h=16, w=16)
    bad = fault(tmp_path / "b" / "zz_bad")
    train = only_train(tmp_path, verify="none", image_size=(16, 16))
    i = train.source.paths.index(bad)
    with pytest.raises(DataError) as e:
        train.source[i]
    assert bad in str(e.value)


def test_jpeg_with_trailing_bytes_is_not_a_false_alarm(tmp_path):
    path = save(tmp_path / "a" / "0.jpg", flat(0, 16, 16), quality=100)
    with open(path, "ab") as f:
        f.write(b"\x00" * 200)  # some writers pad after the end-of-image marker
    img, _ = only_train(tmp_path).source[0]
    np.testing.assert_allclose(img.astype(int), flat(0, 16, 16).astype(int), atol=3)


def test_several_faults_listed_in_one_message(tmp_path):
    make_folder(tmp_path, {"a": 2})
    bad = [fault_zero_bytes(tmp_path / "a" / f"z{i}") for i in range(3)]
    with pytest.raises(DataError, match="3 faulty image file") as e:
        load_folder(tmp_path)
    for p in bad:
        assert p in str(e.value)


def test_skip_corrupt_skips_and_reports(tmp_path):
    paths = make_folder(tmp_path / "train", {"a": 3, "b": 3}, h=16, w=16)
    save(tmp_path / "val" / "a" / "0.png", flat(0, 16, 16))
    bad = [fault_truncated_jpeg(tmp_path / "train" / "a" / "zz"),
           fault_zero_bytes(tmp_path / "train" / "b" / "zz"),
           fault_text_as_png(tmp_path / "val" / "a" / "zz")]
    with pytest.warns(CorruptImageWarning, match="skipped 3 faulty") as rec:
        splits = load_folder(tmp_path, skip_corrupt=True)
    assert bad[0] in str(rec[0].message)
    train, val = splits["train"], splits["validation"]
    assert len(train) == 6 and len(val) == 1
    assert not set(bad) & (set(train.source.paths) | set(val.source.paths))
    assert sorted(train.source.paths) == sorted(paths["a"] + paths["b"])
    assert train.source.num_skipped == 2 and [p for p, _ in train.source.skipped] == bad[:2]
    assert [p for p, _ in val.source.skipped] == bad[2:]
    reported = skipped_files(splits)
    assert [p for p, _ in reported] == bad and all(reason for _, reason in reported)
    # still reachable after the pipeline takes a sub-split
    assert len(skipped_files(train.take(slice(0, 2)))) == 2
    for img, label in read_all(train):
        np.testing.assert_array_equal(img, flat(label, 16, 16))


def test_skip_corrupt_class_with_only_faulty_files(tmp_path):
    make_folder(tmp_path, {"a": 2})
    fault_zero_bytes(tmp_path / "b" / "0")
    with pytest.warns(CorruptImageWarning), pytest.raises(DataError, match="every image file") as e:
        load_folder(tmp_path, skip_corrupt=True)
    assert str(tmp_path / "b") in str(e.value)


def test_fault_found_while_reading_is_replaced_within_its_class(tmp_path):
    # a truncated BMP passes the header check (verify() cannot see it): found at read time
    make_folder(tmp_path, {"a": 3, "b": 3}, ext=".bmp")
    bad = write_truncated(tmp_path / "b" / "001.bmp", flat(1), "BMP", lambda n: n - 40)
    strict = only_train(tmp_path)
    i = strict.source.paths.index(bad)
    with pytest.raises(DataError, match="skip_corrupt") as e:
        strict.source[i]
    assert bad in str(e.value)

    train = only_train(tmp_path, skip_corrupt=True)
    src = train.source
    assert src.paths.index(bad) == i and src.num_skipped == 0
    with pytest.warns(CorruptImageWarning, match="001.bmp"):
        img, label = src[i]
    assert label == train.labels[i] == 1
    np.testing.assert_array_equal(img, flat(1))  # a real image of the same class
    assert src.replacements == {bad: str(tmp_path / "b" / "002.bmp")}  # the next in order
    assert [p for p, _ in skipped_files(train)] == [bad]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once, not on every read
        again, _ = src[i]
    np.testing.assert_array_equal(again, img)
    assert src.num_skipped == 1


def test_whole_class_faulty_at_read_time(tmp_path):
    make_folder(tmp_path, {"a": 2})
    for i in range(2):
        fault_zero_bytes(tmp_path / "b" / str(i))
    train = only_train(tmp_path, verify="none", skip_corrupt=True, image_size=(8, 8))
    i = int(np.flatnonzero(train.labels == 1)[0])
    with pytest.warns(CorruptImageWarning), pytest.raises(DataError, match="class 'b'"):
        train.source[i]


def test_first_file_faulty_without_verification(tmp_path):
    fault_zero_bytes(tmp_path / "a" / "000")
    save(tmp_path / "a" / "001.png", flat(0, 8, 6))
    with pytest.raises(DataError, match="000.jpg"):
        load_folder(tmp_path, verify="none")
    train = only_train(tmp_path, verify="none", skip_corrupt=True)
    assert train.image_shape == (8, 6, 3)  # from the first readable file


def test_source_survives_pickling_for_worker_processes(tmp_path):
    import pickle

    make_folder(tmp_path, {"a": 2, "b": 1})
    src = only_train(tmp_path).source
    copy = pickle.loads(pickle.dumps(src))
    assert copy.classes == src.classes and len(copy) == len(src)
    for i in range(len(src)):
        np.testing.assert_array_equal(copy[i][0], src[i][0])


def test_index_out_of_range(tmp_path):
    make_folder(tmp_path, {"a": 2})
    src = only_train(tmp_path).source
    np.testing.assert_array_equal(src[-1][0], src[1][0])
    with pytest.raises(IndexError):
        src[2]


# ---------------------------------------------------------------------------------------
# Threads and the pipeline
# ---------------------------------------------------------------------------------------

def test_concurrent_reads_match_sequential_reads(tmp_path):
    for k in range(4):
        for i in range(12):
            save(tmp_path / f"c{k}" / f"{i}.png", noisy(seed=100 * k + i, h=12, w=20))
    train = only_train(tmp_path, image_size=(8, 8))
    expected = read_all(train)
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(train)), 4))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (i, train.source[i]), order))
    for i, (img, label) in got:
        assert label == expected[i][1]
        np.testing.assert_array_equal(img, expected[i][0])
    # distinct files really give distinct arrays, so the comparison above means something
    assert not np.array_equal(expected[0][0], expected[1][0])


def folder_config(root, **kw):
    cfg = default_config()
    cfg.dataset.source = "folder"
    cfg.dataset.path = str(root)
    cfg.dataset.eval_split = "validation"
    cfg.dataset.validation_size = 6
    cfg.dataset.image_size = (8, 8)
    cfg.dataset.channels = 3
    for k, v in kw.items():
        setattr(cfg.dataset, k, v)
    return cfg


def test_end_to_end_through_load_datasets(tmp_path):
    make_folder(tmp_path, {"a": 8, "b": 8, "c": 8}, h=10, w=14)
    cfg = folder_config(tmp_path)
    ds = load_datasets(cfg.dataset)
    assert ds.num_classes == 3 and len(ds.train) == 18 and len(ds.eval) == 6
    assert ds.eval.labels.tolist().count(0) == 2  # the held-out tail is balanced
    validate_split(ds.train, ds.num_classes, (8, 8, 3), "train")
    validate_split(ds.eval, ds.num_classes, (8, 8, 3), "validation")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        images = load_examples(ds.eval, np.arange(len(ds.eval)), pool)
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8
    for img, label in zip(images, ds.eval.labels):
        np.testing.assert_allclose(img.astype(int), flat(label, 8, 8).astype(int), atol=1)
    loader = StepLoader(TrainBatches(ds.train, BatchOrder(len(ds.train), 4, seed=0), (0, 4),
                                     None, 0), total_steps=3, workers=0)
    try:
        for step in range(3):
            imgs, labels = loader(step)
            assert imgs.shape == (4, 8, 8, 3)
            for img, label in zip(imgs, labels):
                np.testing.assert_allclose(img.astype(int), flat(label, 8, 8).astype(int), atol=1)
    finally:
        loader.close()


def test_end_to_end_validation_folder_and_model_input_size(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 4}, h=12, w=12)
    make_folder(tmp_path / "validation", {"a": 1, "b": 2}, h=12, w=12)
    cfg = folder_config(tmp_path, image_size=(), channels=0)
    # without dataset.image_size/channels the model's input size decides
    ds = load_datasets(cfg.dataset, input_size=(6, 6, 1))
    assert len(ds.train) == 8 and len(ds.eval) == 3  # the folder, not a held-out tail
    assert ds.eval.image_shape == (6, 6, 1)
    np.testing.assert_array_equal(sorted(ds.eval.labels.tolist()), [0, 1, 1])
    img, label = ds.eval.source[0]
    assert img.shape == (6, 6, 1)
    np.testing.assert_allclose(int(img[3, 3, 0]), luma(colour(label)), atol=1)


def test_streamed_training_is_identical_with_and_without_device_prefetch(tmp_path, monkeypatch):
    """dataset.prefetch puts later steps' batches on the devices early; the batches, and so
    the run, are the same as without it.  A bad value is refused before anything is made."""
    from jaxvision import train
    from tests.helpers import read_metrics

    make_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 12}, h=30, w=30)
    fetched = []
    real = train.loader_lib.StepLoader.__call__

    def spy(self, step):
        fetched.append(step)
        return real(self, step)

    monkeypatch.setattr(train.loader_lib.StepLoader, "__call__", spy)
    fetched_by_first_log = []
    real_flush = train.TrainLog.flush

    def flush_spy(self, done):
        if not fetched_by_first_log:
            fetched_by_first_log.append(len(fetched))
        return real_flush(self, done)

    monkeypatch.setattr(train.TrainLog, "flush", flush_spy)

    def run(prefetch, workdir):
        cfg = folder_config(tmp_path / "data", image_size=(28, 28), channels=1,
                            prefetch=prefetch, workers=0)
        cfg.model, cfg.batch_size, cfg.num_train_steps = "test_cnn", 8, 5
        cfg.log_every_steps, cfg.eval_every_steps, cfg.checkpoint_every_steps = 1, 5, 5
        cfg.async_checkpoint = False
        fetched.clear()
        fetched_by_first_log.clear()
        train.train_and_evaluate(cfg, str(workdir))
        losses = [m["train_loss"] for m in read_metrics(workdir) if "train_loss" in m]
        return losses, list(fetched), fetched_by_first_log[0]

    plain, order_plain, early_plain = run(0, tmp_path / "p0")
    ahead, order_ahead, early_ahead = run(3, tmp_path / "p3")
    assert len(plain) == 5 and plain == ahead
    assert order_plain == order_ahead == [0, 1, 2, 3, 4]  # each step fetched once, in order
    # By the time step 0 is logged, prefetch=3 has fetched the batches of steps 0..3.
    assert (early_plain, early_ahead) == (1, 4)

    with pytest.raises(ValueError, match="dataset.prefetch must be a whole number >= 0"):
        run(-1, tmp_path / "bad")
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()
