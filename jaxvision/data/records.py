"""Packed datasets: encoded images in ArrayRecord shards (``python -m jaxvision.data.pack``).

Layout of a packed dataset folder ``root``::

    root/meta.json                          classes, splits, shard files, record format
    root/<split>.labels.npy                 int32 label of every example, in order
    root/<split>-00000-of-000NN.array_record  one record per example

A record is the example's int32 label (4 bytes, little-endian) followed by the image file's
bytes exactly as they were (JPEG, PNG, ...): nothing is decoded or re-encoded when packing.
Labels are also kept apart from the images (``<split>.labels.npy``), so opening a packed
split reads no image bytes at all.  Random access (``source.read(i)``) goes through grain's
``ArrayRecordDataSource``.  Read with ``dataset.source='array_record'``,
``dataset.path=root``.
"""
from __future__ import annotations

import io
import json
import os
import struct

import numpy as np

from jaxvision.data.sources import DataError, Split

FORMAT = "jaxvision-image-records-v1"
_LABEL = struct.Struct("<i")


def encode_record(label: int, data: bytes) -> bytes:
    return _LABEL.pack(int(label)) + bytes(data)


def decode_record(record: bytes) -> tuple[int, bytes]:
    if len(record) < _LABEL.size:
        raise DataError(f"an image record of {len(record)} bytes is too short to hold a label")
    return _LABEL.unpack_from(record)[0], record[_LABEL.size:]


class ArrayRecordSource:
    """Random access to one packed split: ``read(i) -> (bytes, name)``; ``source[i]`` decodes
    like the image folder (Pillow; resized and centre-cropped to ``image_size`` if given)."""

    def __init__(self, paths, labels, name: str, image_size=None, channels: int = 3):
        self.paths, self.labels = list(paths), np.asarray(labels, np.int32)
        self.name, self.image_size, self.channels = name, image_size, channels
        self._ds = None  # opened lazily, once per process (the reader is not sent to workers)

    def __len__(self):
        return int(self.labels.shape[0])

    def _open(self):
        if self._ds is None:
            import grain
            self._ds = grain.sources.ArrayRecordDataSource(self.paths)
            if len(self._ds) != len(self):
                raise DataError(f"{self.name}: the shards hold {len(self._ds)} records but the "
                                f"labels file {len(self)} labels")
        return self._ds

    def read(self, i) -> tuple[bytes, str]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for the {len(self)} examples of "
                             f"{self.name}")
        label, data = decode_record(self._open()[i])
        if label != self.labels[i]:
            raise DataError(f"{self.name}[{i}]: the record's label {label} differs from the "
                            f"labels file's {self.labels[i]}; the dataset is damaged, pack it "
                            f"again")
        return data, f"{self.name}[{i}]"

    def __getitem__(self, i):
        from jaxvision.data.folder import decode_image
        data, name = self.read(i)
        try:
            img = decode_image(io.BytesIO(data), self.channels, self.image_size)
        except DataError as e:
            raise DataError(f"{name}: {e}") from e
        return img, int(self.labels[int(i)])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_ds"] = None
        return state


def read_meta(root: str) -> dict:
    path = os.path.join(root, "meta.json")
    if not os.path.isfile(path):
        raise DataError(f"{root} is not a packed dataset: it has no meta.json (write one with "
                        f"python -m jaxvision.data.pack SRC {root})")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def load_records(root: str, image_size=None, channels=None) -> dict[str, Split]:
    """The splits of a packed dataset folder.  Labels come from ``<split>.labels.npy``;
    no image is read.  ``image_size``/``channels`` only apply to ``source[i]`` (decoding
    without a transform)."""
    if not root:
        raise DataError("dataset.source='array_record' needs dataset.path (a packed folder)")
    meta = read_meta(root)
    classes = meta["classes"]
    channels = channels or 3
    size = tuple(image_size) if image_size else None
    out = {}
    for split, info in meta["splits"].items():
        labels = np.load(os.path.join(root, f"{split}.labels.npy"))
        if labels.shape != (info["num_examples"],):
            raise DataError(f"{root}/{split}.labels.npy holds {labels.shape} labels, meta.json "
                            f"says {info['num_examples']}")
        paths = [os.path.join(root, s) for s in info["shards"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"packed dataset {root} lacks shard(s) {missing[:3]}")
        src = ArrayRecordSource(paths, labels, f"{root}:{split}", size, channels)
        shape = (*size, channels) if size else None
        out[split] = Split(labels, len(classes), split, source=src, image_shape=shape)
    if "train" not in out:
        raise DataError(f"packed dataset {root} has no 'train' split (it has {sorted(out)})")
    return out
