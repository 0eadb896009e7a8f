"""Pack a dataset into ArrayRecord shards of encoded images (``jaxvision.data.records``).

    python -m jaxvision.data.pack SRC OUT [--shards N] [--source folder|tfds|array_record]
                                          [--data_dir DIR]

``SRC`` is an image folder (default), a tfds name (``--source tfds``, prepared in
``--data_dir``) or another packed folder.  Every split of the source is written with its
class names; images are copied as their encoded bytes (no decoding, no re-encoding), so the
packed dataset trains exactly like the source.  Read it with
``--config.dataset.source=array_record --config.dataset.path=OUT``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from jaxvision.data import records
from jaxvision.data.sources import DataError


def _open_source(src: str, kind: str, data_dir: str | None):
    """``{split: (source with read(i), labels)}`` and the class names."""
    if kind == "folder":
        from jaxvision.data.folder import load_folder
        splits = load_folder(src, image_size=(1, 1))  # size unused: only bytes are read
        classes = splits["train"].source.classes
    elif kind == "array_record":
        splits = records.load_records(src)
        classes = records.read_meta(src)["classes"]
    elif kind == "tfds":
        from jaxvision.utils import require
        tfds = require("tensorflow_datasets", "tfds", "--source tfds")

        from jaxvision.data.sources import load_tfds
        info = tfds.builder(src, data_dir=data_dir).info
        splits = load_tfds(src, data_dir, splits=tuple(info.splits.keys()), max_in_memory_bytes=0)
        classes = list(info.features["label"].names)
    else:
        raise DataError(f"--source must be folder, tfds or array_record, not {kind!r}")
    return {k: (s.source, s.labels) for k, s in splits.items()}, classes


def pack(src: str, out: str, shards: int = 1, kind: str = "folder",
         data_dir: str | None = None, log=print) -> dict:
    """Write every split of ``src`` to ``out``; returns the written meta.json contents."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if shards < 1:
        raise DataError(f"--shards must be >= 1, got {shards}")
    splits, classes = _open_source(src, kind, data_dir)
    if os.path.exists(os.path.join(out, "meta.json")):
        raise DataError(f"{out} already holds a packed dataset; choose another folder")
    os.makedirs(out, exist_ok=True)
    meta = {"format": records.FORMAT, "classes": list(classes), "source": os.path.abspath(src)
            if kind != "tfds" else f"tfds:{src}", "splits": {}}
    for split, (source, labels) in splits.items():
        n = len(labels)
        k = min(shards, n)
        names = [f"{split}-{s:05d}-of-{k:05d}.array_record" for s in range(k)]
        bounds = np.linspace(0, n, k + 1).astype(int)  # contiguous ranges: order is kept
        for s, name in enumerate(names):
            # group_size:1 keeps every record separately addressable (fast random access)
            w = ArrayRecordWriter(os.path.join(out, name), "group_size:1")
            try:
                for i in range(bounds[s], bounds[s + 1]):
                    data, _ = source.read(i)
                    w.write(records.encode_record(int(labels[i]), data))
            finally:
                w.close()
        np.save(os.path.join(out, f"{split}.labels.npy"), np.asarray(labels, np.int32))
        meta["splits"][split] = {"num_examples": n, "shards": names}
        log(f"{split}: {n} examples in {k} shard(s)")
    with open(os.path.join(out, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out, "meta.json.tmp"), os.path.join(out, "meta.json"))
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jaxvision.data.pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--source", default="folder", choices=("folder", "tfds", "array_record"))
    p.add_argument("--data_dir", default=None)
    a = p.parse_args(argv)
    try:
        pack(a.src, a.out, a.shards, a.source, a.data_dir)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
