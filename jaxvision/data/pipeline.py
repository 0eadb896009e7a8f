"""From a dataset config to validated splits and deterministic, resumable batches.

Order of examples is a pure function of ``(seed, epoch)``: every epoch is a fresh
permutation of the training set, and global batch ``s`` is slice ``s mod steps_per_epoch``
of epoch ``s // steps_per_epoch``'s permutation (the incomplete tail is dropped).  So the
data position *is* the step: a resumed run, or one on a different number of hosts, sees
exactly the same global batches.  Each process loads only its contiguous part of every
global batch.

In-memory splits are placed on device once, and batches are gathered there; streaming
splits are decoded and transformed on the host by worker processes
(``jaxvision.data.loader``).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from jaxvision.data.sources import DataError, Split, load_bundled, load_idx, load_tfds

SOURCES = ("bundled", "idx", "tfds", "folder", "array_record", "synthetic")


@dataclasses.dataclass
class Datasets:
    train: Split
    eval: Split
    num_classes: int


def load_datasets(ds_cfg, num_classes: int | None = None, input_size=None) -> Datasets:
    """Load the train and eval splits named by ``config.dataset``.  ``input_size`` (H, W, C)
    of the model sets the decoded size and channels of folder images unless the dataset
    config says otherwise."""
    source = ds_cfg.source
    if source == "bundled":
        splits = load_bundled()
    elif source == "idx":
        if not ds_cfg.path:
            raise DataError("dataset.source='idx' needs dataset.path (a folder of IDX files)")
        splits = load_idx(ds_cfg.path, num_classes)
    elif source == "tfds":
        if not ds_cfg.name:
            raise DataError("dataset.source='tfds' needs dataset.name, e.g. 'cifar10'")
        size = tuple(ds_cfg.image_size) or (tuple(input_size[:2]) if input_size else None)
        splits = load_tfds(ds_cfg.name, ds_cfg.data_dir or None,
                           splits=("train", ds_cfg.eval_split), image_size=size)
    elif source == "folder":
        from jaxvision.data.folder import load_folder
        if not ds_cfg.path:
            raise DataError("dataset.source='folder' needs dataset.path")
        size = tuple(ds_cfg.image_size) or (tuple(input_size[:2]) if input_size else None)
        chans = ds_cfg.channels or (input_size[2] if input_size else None)
        splits = load_folder(ds_cfg.path, image_size=size, channels=chans,
                             skip_corrupt=ds_cfg.skip_corrupt, verify=ds_cfg.verify)
    elif source == "array_record":
        from jaxvision.data.records import load_records
        size = tuple(ds_cfg.image_size) or (tuple(input_size[:2]) if input_size else None)
        chans = ds_cfg.channels or (input_size[2] if input_size else None)
        splits = load_records(ds_cfg.path, image_size=size, channels=chans)
    elif source == "synthetic":
        splits = synthetic_splits(ds_cfg, num_classes, input_size)
    else:
        import difflib
        close = difflib.get_close_matches(str(source), SOURCES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset.source {source!r}; choose one of {SOURCES}.{hint}")

    train = splits["train"]
    if ds_cfg.eval_split == "validation":
        if "validation" in splits:
            evals = splits["validation"]
        else:
            n_val = int(ds_cfg.validation_size)
            if not 0 < n_val < len(train):
                raise DataError(f"dataset.validation_size={n_val} must be in (0, {len(train)}) "
                                f"for the {len(train)} training examples")
            evals = train.take(slice(len(train) - n_val, None), "validation")
            train = train.take(slice(0, len(train) - n_val), "train")
    elif ds_cfg.eval_split in splits:
        evals = splits[ds_cfg.eval_split]
    else:
        raise DataError(f"dataset.eval_split={ds_cfg.eval_split!r} is not available for source "
                        f"{source!r}; available: 'validation', {sorted(splits)}")
    if ds_cfg.train_size:
        train = train.take(slice(0, int(ds_cfg.train_size)), "train")
    if ds_cfg.get("distort"):
        if not train.in_memory:  # checked before the held-out images are distorted
            raise DataError(f"dataset.distort={ds_cfg.distort!r} distorts the training images "
                            "on device and needs an in-memory source (bundled, idx, synthetic)")
        evals = distorted_eval(evals, ds_cfg.distort)
    k = num_classes or train.num_classes
    return Datasets(train=train, eval=evals, num_classes=k)


def distorted_eval(split: Split, mode: str) -> Split:
    """The held-out split as a fixed distorted-MNIST test set (key 0, independent of the
    run's seed, so every run of a config is scored on the same images)."""
    from jaxvision.data import distort
    try:
        distort.check_mode(mode)
    except ValueError as e:
        raise DataError(f"dataset.distort: {e}") from None
    if not split.in_memory:
        raise DataError(f"dataset.distort={mode!r} needs an in-memory {split.name} split")
    if len(split) == 0:
        raise DataError(f"the {split.name} split is empty")
    images = distort.distort_images(split.images, mode, seed=0)
    return Split(split.labels, split.num_classes, split.name, images=images)


def synthetic_splits(ds_cfg, num_classes, input_size) -> dict[str, Split]:
    """Random images of the model's input shape: for smoke tests and benchmarks only."""
    h, w = tuple(ds_cfg.image_size) or tuple(input_size[:2])
    c = ds_cfg.channels or input_size[2]
    k = num_classes or 10
    n = int(ds_cfg.train_size or 256)
    rng = np.random.default_rng(0)
    make = lambda m, name: Split(rng.integers(0, k, m).astype(np.int32), k, name,  # noqa: E731
                                 images=rng.integers(0, 256, (m, h, w, c), dtype=np.uint8))
    return {"train": make(n, "train"), "validation": make(max(n // 4, 1), "validation"),
            "test": make(max(n // 4, 1), "test")}


def validate_split(split: Split, num_classes: int, input_size, what: str):
    """Fail early, with a message naming the problem, on data the model cannot take."""
    if len(split) == 0:
        raise DataError(f"the {what} split is empty")
    labels = split.labels
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} labels must be a 1-D integer array, got shape {labels.shape} "
                        f"dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(f"{what} labels must lie in [0, {num_classes}) for num_classes="
                        f"{num_classes}; {bad.size} do not, e.g. label {labels[bad[0]]} at "
                        f"index {bad[0]}")
    if split.in_memory:
        images = split.images
        if images.dtype != np.uint8:
            raise DataError(f"{what} images must be uint8 pixels in [0, 255], got {images.dtype}")
        if images.ndim != 4:
            raise DataError(f"{what} images must be (N, H, W, C), got shape {images.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels")
    shape = split.image_shape
    if shape is None or len(shape) != 3:
        raise DataError(f"{what} images need a fixed (H, W, C) shape, got {shape}; set "
                        f"dataset.image_size")
    if shape[2] != input_size[2]:
        raise DataError(f"{what} images have {shape[2]} channel(s) but the model takes "
                        f"{input_size[2]} (input_size {tuple(input_size)}); set "
                        f"dataset.channels or choose a model for {shape[2]}-channel input")


# ---------------------------------------------------------------------------------------
# Deterministic order
# ---------------------------------------------------------------------------------------

def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchOrder:
    """Global batch ``step`` -> example indices, with a small per-epoch cache."""

    def __init__(self, n: int, global_batch: int, seed: int):
        if n < global_batch:
            raise DataError(f"the training split has {n} examples, fewer than one global batch "
                            f"of {global_batch}")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.steps_per_epoch = n // global_batch
        self._epoch, self._perm = None, None

    def position(self, step: int) -> dict:
        return {"epoch": step // self.steps_per_epoch,
                "batch_in_epoch": step % self.steps_per_epoch, "seed": self.seed}

    def indices(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, self.n)
        return self._perm[b * self.batch:(b + 1) * self.batch]


# ---------------------------------------------------------------------------------------
# Host-side loading for streaming splits
# ---------------------------------------------------------------------------------------

def load_examples(split: Split, indices: np.ndarray, pool=None) -> np.ndarray:
    """Decode ``split.source[i]`` for each index into one uint8 batch."""
    shape = split.image_shape

    def one(i):
        img, _ = split.source[int(i)]
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape != shape:
            raise DataError(f"example {i} of the {split.name} split has shape {img.shape}, "
                            f"expected {shape}")
        return img

    imgs = list(pool.map(one, indices)) if pool is not None else [one(i) for i in indices]
    return np.stack(imgs).astype(np.uint8)


def eval_batches(n: int, global_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Indices and weights covering all ``n`` examples once; the last batch is padded with
    weight-0 repeats so every batch has the same shape (no recompilation)."""
    for start in range(0, n, global_batch):
        idx = np.arange(start, min(start + global_batch, n))
        w = np.ones(global_batch, np.float32)
        if idx.size < global_batch:
            w[idx.size:] = 0
            idx = np.concatenate([idx, np.zeros(global_batch - idx.size, idx.dtype)])
        yield idx, w
