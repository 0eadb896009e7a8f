"""Image folders: one sub-folder of image files per class (the torchvision ``ImageFolder`` layout).

Two layouts are recognised under ``root``::

    root/<class>/<files>                       -> split 'train'
    root/{train, val|validation, test}/<class>/<files>
                                               -> splits 'train', 'validation', 'test'

The second is chosen only when every visible sub-folder of ``root`` is one of those split
names and ``train`` is among them, so a dataset with a class called ``train`` (Pascal VOC
has one) still reads as the first layout.  Classes are the sub-folder names of the training
split sorted as strings, with labels ``0..K-1`` (as ``ImageFolder``); the other splits use
the same ids, and a class folder they have that training lacks is an error.  Files are
found recursively inside a class folder; hidden files and folders (``.name``) and files
without an image extension are ignored.

Examples are ordered *stratified*, not class after class: a file's place is its relative
position within its class, so every prefix and suffix of a split holds the classes in
proportion.  The pipeline takes the held-out validation examples from the end of the
training split and ``dataset.train_size`` from its start; with class-after-class order
both would see only a few classes.

Decoding (Pillow, by content, so a PNG named ``.jpg`` is fine) gives uint8 ``(H, W, C)``
with ``C = channels`` (1 or 3):

* grayscale (``L``, ``1``, 16-bit) is replicated to three channels when three are asked
  for; colour is reduced to one channel with Pillow's ITU-R 601-2 luma;
* transparency (``RGBA``, ``LA``, palette images with a transparent entry) is composited
  onto black, i.e. colour times alpha.  Black is the zero the network sees for padding,
  and it is the one choice that does not depend on whatever colour an editor left under
  fully transparent pixels (dropping alpha would expose exactly that);
* ``CMYK`` (and ``YCbCr``, ``RGBX``) go through Pillow's conversion to RGB;
* 16-bit and 32-bit integer images (``I;16``, ``I;16B``, ``I``) are scaled to 8 bits by
  ``round(v / 257)``, so 65535 -> 255 and ``257 * k -> k``; values outside [0, 65535] are
  an error;
* 32-bit float images (``F``) are refused: floats have no agreed range to map to 8 bits.
* EXIF orientation is not applied (as ``ImageFolder``).

With ``image_size=(H, W)``, ``source[i]`` resizes the shorter side to fit (Pillow bilinear,
which antialiases when it shrinks) and crops the centre ``H x W``; without it every image
must already share one size.  Training and evaluation do not use ``source[i]``: the loader
reads each file's bytes (``source.read(i)``) and applies the host transforms to the full
image (``source.transformed``; ``jaxvision.data.loader``, docs/pipeline.md).

Only the formats that match the accepted extensions are opened (JPEG, PNG, BMP, GIF,
WebP, TIFF, PPM/PGM); content of any other format is refused even under an image
extension, since some Pillow plugins hand files to external programs (EPS to Ghostscript).

Faulty files
------------
``verify`` says how much of every file is checked when the folder is loaded:

``'header'`` (default)  the file is not empty, its header parses, Pillow's ``verify()``
    passes (for PNG that checks every chunk's CRC, so a truncated PNG is caught), and a
    JPEG ends with its end-of-image marker; a JPEG that does not is fully decoded to
    confirm.  Other formats get the header check only.
``'full'``  every file is decoded (and resized) once.
``'none'``  nothing is read until training asks for the example.

A faulty file found at load time is a :class:`DataError` naming its path and the reason
(all of them, up to a few, in one message), unless ``skip_corrupt=True``: then it is left
out, counted in ``source.skipped`` (``(path, reason)`` pairs; :func:`skipped_files`
collects them over splits) and reported once with ``warnings.warn``.

A file that is only found faulty when an example is read (``verify='none'``, or a fault
the header check cannot see) raises :class:`DataError` with its path, unless
``skip_corrupt=True``: then the example is replaced by the next readable file *of the same
class* (cyclically, in file order), so the label the pipeline already holds stays right and
the replacement is the same on every read, in every thread and on every host.  The file is
added to ``source.skipped``, its replacement recorded in ``source.replacements``, and a
warning is issued once per file.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxvision.data.decode import PIL_FORMATS
from jaxvision.data.decode import FileFault as _FileFault
from jaxvision.data.decode import fault_reason as _reason
from jaxvision.data.decode import to_8bit as _to_8bit
from jaxvision.data.sources import DataError, Split

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif",
                              ".tiff", ".ppm", ".pgm"})
VERIFY_MODES = ("none", "header", "full")
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation",
                 "test": "test"}
_MAX_LISTED = 5  # faulty files named in one message or warning


class CorruptImageWarning(UserWarning):
    """Faulty image files were skipped (``skip_corrupt=True``)."""


# ---------------------------------------------------------------------------------------
# Decoding (the pixel-format rules live in jaxvision.data.decode, shared with the
# streaming transforms)
# ---------------------------------------------------------------------------------------

def _resize_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize the shorter side to fit ``size=(H, W)``, then crop the centre."""
    out_h, out_w = size
    w, h = img.size
    if (h, w) == (out_h, out_w):
        return img
    scale = max(out_h / h, out_w / w)
    new_w, new_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    return img.crop((left, top, left + out_w, top + out_h))


def _decode(path: str, channels: int, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode one file to uint8 (H, W, channels); raises _FileFault for a faulty file."""
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            img.load()
            img = _to_8bit(img)
            if channels == 1 and img.mode == "RGB":
                img = img.convert("L")
            if image_size is not None:
                img = _resize_crop(img, image_size)
            arr = np.asarray(img, dtype=np.uint8)
    except _FileFault:
        raise
    except Exception as e:  # Pillow raises many exception types on corrupt data
        raise _FileFault(_reason(e)) from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def decode_image(path: str, channels: int = 3,
                 image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to uint8 ``(H, W, channels)`` as the folder source does.

    Raises :class:`DataError` naming ``path`` and the reason when the file is faulty.
    """
    channels = _check_channels(channels)
    image_size = _check_image_size(image_size)
    try:
        return _decode(path if hasattr(path, "read") else os.fspath(path), channels,
                       image_size)
    except _FileFault as e:
        raise DataError(f"cannot decode image file {path}: {e}") from e


def _check_header(path: str, full: bool, channels: int,
                  image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) of a file as stored, after the checks of ``verify='header'`` or
    ``'full'``; raises _FileFault for a faulty file."""
    try:
        if os.stat(path).st_size == 0:
            raise _FileFault("empty file (0 bytes)")
    except OSError as e:
        raise _FileFault(_reason(e)) from e
    if full:  # exactly what training runs; the size only matters without image_size
        arr = _decode(path, channels, image_size)
        return arr.shape[0], arr.shape[1]
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            w, h = img.size
            fmt, mode = img.format, img.mode
            img.verify()
        if mode == "F":
            raise _FileFault("32-bit float pixels (mode 'F') have no fixed range to map to "
                             "8 bits; save the image as 8- or 16-bit")
        if fmt in ("JPEG", "MPO"):
            # verify() reads only the JPEG header; a file cut short loses its end-of-image
            # marker, so only such files pay for a full decode.  Entropy-coded data cannot
            # contain the marker (0xFF is stuffed), so finding it in the tail is reliable.
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
                tail = f.read()
            if b"\xff\xd9" not in tail:
                _decode(path, channels, None)
    except _FileFault:
        raise
    except Exception as e:
        raise _FileFault(_reason(e)) from e
    return h, w


# ---------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------

class FolderSource:
    """Random access to one split of an image folder: ``source[i] -> (uint8 HWC, label)``.

    Safe to read from many threads at once: every read opens its own file, and the only
    shared state (the record of files found faulty while reading) is guarded by a lock.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, classes: Sequence[str],
                 image_shape: tuple[int, int, int], resize: bool, skip_corrupt: bool,
                 root: str, split: str, skipped: Sequence[tuple[str, str]] = ()):
        self.paths = list(paths)
        self.labels = np.asarray(labels, np.int32)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.image_shape = tuple(image_shape)
        self.resize = resize
        self.skip_corrupt = skip_corrupt
        self.root, self.split = root, split
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.replacements: dict[str, str] = {}
        self._members = {k: np.flatnonzero(self.labels == k) for k in range(len(classes))}
        self._rank = np.empty(len(self.paths), np.int64)
        for idx in self._members.values():
            self._rank[idx] = np.arange(idx.size)
        self._bad: dict[int, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` for every example, in order."""
        return list(zip(self.paths, self.labels.tolist()))

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __getitem__(self, i) -> tuple[np.ndarray, int]:
        i = self._index(i)
        return self._read_replacing(i, self._load), int(self.labels[i])

    def read(self, i) -> tuple[bytes, str]:
        """The encoded bytes of example ``i`` and its path (for a transform)."""
        path = self.paths[self._index(i)]
        try:
            with open(path, "rb") as f:
                return f.read(), path
        except OSError as e:
            raise DataError(f"cannot read image file {path}: {_reason(e)}") from e

    def transformed(self, i, transform, rng_seed=None) -> np.ndarray:
        """Example ``i`` through ``transform(bytes, rng, path)`` (``jaxvision.data.loader``),
        with a fresh ``np.random.default_rng(rng_seed)``; a faulty file is replaced as
        ``source[i]`` replaces it under ``skip_corrupt``."""
        def load(j):
            try:
                data, path = self.read(j)
                rng = None if rng_seed is None else np.random.default_rng(rng_seed)
                return transform(data, rng, path)
            except DataError as e:  # a transform's DataError is a faulty file
                msg, prefix = str(e), f"cannot decode image file {self.paths[j]}: "
                raise _FileFault(msg[len(prefix):] if msg.startswith(prefix) else msg) from e
        return self._read_replacing(self._index(i), load)

    def _index(self, i) -> int:
        n = len(self.paths)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for the {n} examples of {self.split}")
        return i % n

    def _read_replacing(self, i: int, load) -> np.ndarray:
        label = int(self.labels[i])
        if i not in self._bad:  # a file already found faulty is not decoded again
            try:
                return load(i)
            except _FileFault as e:
                if not self.skip_corrupt:
                    raise DataError(f"cannot decode image file {self.paths[i]}: {e} (set "
                                    f"dataset.skip_corrupt=True to replace faulty files)") from e
                self._record(i, str(e))
        members = self._members[label]
        r = int(self._rank[i])
        for step in range(1, members.size):
            j = int(members[(r + step) % members.size])
            if j in self._bad:
                continue
            try:
                img = load(j)
            except _FileFault as e:
                self._record(j, str(e))
                continue
            with self._lock:
                self.replacements.setdefault(self.paths[i], self.paths[j])
            return img
        raise DataError(f"every image file of class {self.classes[label]!r} in the {self.split} "
                        f"split is faulty; the first was {self.paths[i]}")

    def _load(self, i: int) -> np.ndarray:
        path = self.paths[i]
        h, w, c = self.image_shape
        arr = _decode(path, c, (h, w) if self.resize else None)
        if arr.shape != self.image_shape:
            # a size mismatch is a configuration problem, not a faulty file: never skipped
            raise DataError(f"image file {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the "
                            f"{self.split} split's images are {w}x{h}; set dataset.image_size "
                            f"to resize them all to one size")
        return arr

    def _record(self, i: int, reason: str):
        with self._lock:
            if i in self._bad:
                return
            self._bad[i] = reason
            self.skipped.append((self.paths[i], reason))
        warnings.warn(f"faulty image file {self.paths[i]} ({reason}) found while reading the "
                      f"{self.split} split; it is replaced by the next readable file of class "
                      f"{self.classes[int(self.labels[i])]!r}", CorruptImageWarning,
                      stacklevel=3)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def skipped_files(obj: Any) -> list[tuple[str, str]]:
    """The ``(path, reason)`` of every file skipped or replaced so far, for a
    :class:`FolderSource`, a :class:`Split` of one (also a ``take`` of it), or a dict of
    splits as :func:`load_folder` returns."""
    if isinstance(obj, dict):
        out, seen = [], set()
        for split in obj.values():
            for item in skipped_files(split):
                if item not in seen:
                    seen.add(item)
                    out.append(item)
        return out
    if isinstance(obj, Split):
        obj = obj.source
    while obj is not None and not isinstance(obj, FolderSource):
        obj = getattr(obj, "source", None)  # unwrap Split.take's subsets
    if obj is None:
        return []
    with obj._lock:
        return list(obj.skipped)


# ---------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------

def visible_dirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".")
                      and e.is_dir(follow_symlinks=True))


def is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _image_files(folder: str) -> tuple[list[str], int]:
    """Image files under ``folder`` (recursive, sorted) and how many other files it holds."""
    found, others, seen = [], 0, set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_image(name):
                found.append(os.path.join(dirpath, name))
            elif not name.startswith("."):
                others += 1
    return found, others


def _scan_split(folder: str, split: str, classes: list[str] | None):
    """``{class: [paths]}`` for one split folder, validated."""
    names = visible_dirs(folder)
    if not names:
        loose = [n for n in os.listdir(folder) if is_image(n)]
        hint = (f" ({len(loose)} image files lie directly in it: move each into a "
                f"sub-folder named after its class)" if loose else "")
        raise DataError(f"image folder {folder} has no class sub-folders{hint}; expected "
                        f"{folder}/<class>/<image files>")
    if classes is not None:
        unknown = [c for c in names if c not in classes]
        if unknown:
            raise DataError(f"the {split} split has class folder(s) {unknown} under {folder} that "
                            f"the training split does not have (training classes: "
                            f"{classes[:10]}{'...' if len(classes) > 10 else ''})")
    files = {}
    for c in names:
        path = os.path.join(folder, c)
        found, others = _image_files(path)
        if not found:
            what = (f"it holds {others} file(s), none with an image extension "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))})" if others else "it is empty")
            raise DataError(f"class folder {path} has no image files: {what}")
        files[c] = found
    return files


def class_names(root: str) -> list[str]:
    """The class folder names of the image folder ``root``'s training split, sorted (the
    label order a model trained on it uses)."""
    return visible_dirs(_layout(root)["train"])


def _layout(root: str) -> dict[str, str]:
    """Split name -> folder whose sub-folders are the classes."""
    names = visible_dirs(root)
    split_like = [n for n in names if n in SPLIT_FOLDERS]
    if names and len(split_like) == len(names):
        if "train" not in names:
            raise DataError(f"image folder {root} has split folder(s) {split_like} but no "
                            f"'train' folder")
        if "val" in names and "validation" in names:
            raise DataError(f"image folder {root} has both 'val' and 'validation'; keep one")
        return {SPLIT_FOLDERS[n]: os.path.join(root, n) for n in names}
    return {"train": root}


def _stratified(files: dict[str, list[str]], class_ids: dict[str, int]):
    """Paths and labels ordered by relative position within their class."""
    keys, paths, labels = [], [], []
    for c, found in files.items():
        n = len(found)
        for j, p in enumerate(found):
            keys.append(((j + 0.5) / n, class_ids[c]))
            paths.append(p)
            labels.append(class_ids[c])
    order = sorted(range(len(paths)), key=keys.__getitem__)
    return [paths[i] for i in order], np.asarray([labels[i] for i in order], np.int32)


def _check_channels(channels) -> int:
    channels = 3 if channels is None else channels
    if channels not in (1, 3):
        raise DataError(f"images can be decoded to 1 or 3 channels, not {channels!r} "
                        f"(dataset.channels)")
    return int(channels)


def _check_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None or (isinstance(image_size, (tuple, list)) and len(image_size) == 0):
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    try:
        h, w = (int(v) for v in image_size)
        ok = h > 0 and w > 0 and all(float(v) == int(v) for v in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"image_size must be (H, W) with positive integers, got "
                        f"{image_size!r} (dataset.image_size)")
    return h, w


def _listing(faults: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{p}: {r}" for p, r in faults[:_MAX_LISTED])
    more = f"; and {len(faults) - _MAX_LISTED} more" if len(faults) > _MAX_LISTED else ""
    return shown + more


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

def load_folder(root, image_size=None, channels=None, skip_corrupt: bool = False,
                verify: str = "header", workers: int = 8) -> dict[str, Split]:
    """Streaming splits of an image folder (layouts, decoding and fault handling: see the
    module docstring).

    Args:
      root: the dataset folder.
      image_size: ``(H, W)`` every image is resized and centre-cropped to; ``None``: the
        images must all share one size already.
      channels: 1 or 3 (``None``: 3).
      skip_corrupt: leave out faulty files instead of failing (and count them).
      verify: ``'header'``, ``'full'`` or ``'none'``: how much of each file is checked now.
      workers: threads that check the files.

    Returns:
      ``{'train': Split, ...}`` with ``'validation'`` and ``'test'`` when the folder has
      them; each ``Split.source`` is a :class:`FolderSource` (``classes``, ``skipped``).
    """
    if root is None or root == "":
        raise DataError("the image folder path is empty (dataset.path)")
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DataError(f"image folder {root} does not exist (dataset.path)")
    if not os.path.isdir(root):
        raise DataError(f"image folder {root} is not a directory (dataset.path)")
    channels = _check_channels(channels)
    image_size = _check_image_size(image_size)
    if verify not in VERIFY_MODES:
        raise DataError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    Image.init()  # register Pillow's plugins once, before any thread opens a file

    folders = _layout(root)
    files = {"train": _scan_split(folders["train"], "train", None)}
    classes = sorted(files["train"])
    for split, folder in folders.items():
        if split != "train":
            files[split] = _scan_split(folder, split, classes)
    class_ids = {c: k for k, c in enumerate(classes)}
    ordered = {s: _stratified(f, class_ids) for s, f in files.items()}

    # ---- check every file (in threads: mostly waiting on the disk) ----
    all_paths = [p for paths, _ in ordered.values() for p in paths]
    sizes: dict[str, tuple[int, int]] = {}
    faults: dict[str, str] = {}
    if verify != "none":
        def check(p):
            try:
                return p, _check_header(p, verify == "full", channels, image_size), None
            except _FileFault as e:
                return p, None, str(e)

        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(all_paths)))) as ex:
            for p, hw, err in ex.map(check, all_paths):
                if err is None:
                    sizes[p] = hw
                else:
                    faults[p] = err
    bad = [(p, faults[p]) for p in all_paths if p in faults]
    if bad and not skip_corrupt:
        raise DataError(f"{len(bad)} faulty image file(s) under {root}: {_listing(bad)}. Fix or "
                        f"remove them, or set dataset.skip_corrupt=True to skip them")
    bad_by_split = {s: [(p, faults[p]) for p in paths if p in faults]
                    for s, (paths, _) in ordered.items()}
    if bad:
        warnings.warn(f"skipped {len(bad)} faulty image file(s) under {root}: {_listing(bad)}",
                      CorruptImageWarning, stacklevel=2)
        for split, (paths, labels) in ordered.items():
            keep = np.asarray([p not in faults for p in paths], bool)
            missing = sorted(set(labels[~keep].tolist()) - set(labels[keep].tolist()))
            if missing:
                c = classes[missing[0]]
                raise DataError(f"every image file of class folder "
                                f"{os.path.join(folders[split], c)} is faulty")
            ordered[split] = ([p for p, k in zip(paths, keep) if k], labels[keep])

    # ---- one image shape for every split ----
    if image_size is not None:
        shape = (*image_size, channels)
    else:
        if verify == "none":  # the first readable file sets the size; the rest are
            for path in ordered["train"][0]:  # checked as they are read
                try:
                    sizes[path] = _check_header(path, False, channels, None)
                    break
                except _FileFault as e:
                    if not skip_corrupt:
                        raise DataError(f"cannot read image file {path}: {e}") from e
            if not sizes:
                raise DataError(f"no readable image file in the training split of {root}")
        distinct: dict[tuple[int, int], str] = {}
        for p, hw in sizes.items():
            distinct.setdefault(hw, p)
        if len(distinct) > 1:
            examples = ", ".join(f"{p} is {w}x{h}" for (h, w), p in list(distinct.items())[:3])
            raise DataError(f"the images under {root} have {len(distinct)} different sizes "
                            f"(WxH: {examples}); set dataset.image_size=(H, W) to resize them")
        shape = (*next(iter(distinct)), channels)

    out = {}
    for split, (paths, labels) in ordered.items():
        src = FolderSource(paths, labels, classes, shape, image_size is not None, skip_corrupt,
                           folders[split], split, skipped=bad_by_split[split])
        out[split] = Split(labels, len(classes), split, source=src, image_shape=shape)
    return out
