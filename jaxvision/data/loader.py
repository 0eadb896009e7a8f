"""Streaming input: worker processes (grain) turn encoded images into uint8 batches.

Determinism contract
--------------------
The examples of global batch ``s`` are ``BatchOrder.indices(s)`` (a pure function of
``(seed, s)``), and example ``j`` of that batch is transformed with the generator
``np.random.default_rng([seed, s, j])``.  A batch is therefore a pure function of
``(seed, step)``: it does not depend on the number of worker processes, on which worker
made it, on timing, or on how many hosts share the batch (each host makes only its slice,
with the same ``j`` it has in the global batch).  The loader's position *is* the step, so
resuming at a checkpoint's step restarts the loader exactly there.

One grain element is one host batch: worker ``w`` of ``W`` makes the batches of steps
``start + w, start + w + W, ...`` and grain hands them back in step order through shared
memory (``mp_prefetch``).  With ``workers=0`` the batches are made in this process, by one
background thread, a few steps ahead.

A streaming source offers ``read(i) -> (encoded bytes, name)`` (the name, usually a path,
goes into error messages) and its labels come from metadata; a transform is a picklable
callable ``t(data: bytes, rng: np.random.Generator | None, name: str) -> uint8 (H, W, C)``
(``jaxvision.data.transforms``).  A source may also define
``transformed(i, transform, rng_seed)`` to handle faulty files itself (the image folder
replaces them under ``skip_corrupt``); without a transform, ``source[i]`` gives the
decoded image as before.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator

import numpy as np

from jaxvision.data.sources import DataError, Split, transform_example


def example_rng(seed: int, step: int, j: int) -> np.random.Generator:
    """The generator of example ``j`` (its place in the global batch) of step ``step``."""
    return np.random.default_rng([seed, step, j])


def load_one(source, i: int, transform, rng_seed, shape, what: str) -> np.ndarray:
    """Example ``i`` of ``source`` as uint8 ``shape``, through ``transform`` when given."""
    if transform is None:
        img = np.asarray(source[int(i)][0])
    else:
        img = transform_example(source, int(i), transform, rng_seed)
    if img.ndim == 2:
        img = img[..., None]
    if tuple(img.shape) != tuple(shape):
        raise DataError(f"example {i} of the {what} split has shape {img.shape}, expected "
                        f"{tuple(shape)}")
    return img


@dataclasses.dataclass(frozen=True)
class TrainBatches:
    """``step -> (images uint8 (b, H, W, C), labels int32 (b,))``: this host's part of the
    global batch of ``step``.  Picklable, so grain can send it to worker processes."""

    split: Split
    order: Any                     # pipeline.BatchOrder
    host: tuple[int, int]          # [start, stop) of this host within the global batch
    transform: Callable | None
    seed: int

    def __call__(self, step: int):
        step = int(step)
        idx = self.order.indices(step)[self.host[0]:self.host[1]]
        out = np.empty((idx.size, *self.split.image_shape), np.uint8)
        src = self.split.source
        for k, i in enumerate(idx):
            rng_seed = [self.seed, step, self.host[0] + k] if self.transform else None
            out[k] = load_one(src, i, self.transform, rng_seed, self.split.image_shape,
                              self.split.name)
        return out, self.split.labels[idx].astype(np.int32)


@dataclasses.dataclass(frozen=True)
class EvalBatches:
    """``k -> (images, labels, weights)``: this host's part of evaluation batch ``k``
    (``pipeline.eval_batches``: padded with weight-0 repeats to a full batch)."""

    split: Split
    batch: int
    host: tuple[int, int]
    transform: Callable | None

    def __call__(self, k: int):
        n = len(self.split)
        idx = np.arange(k * self.batch, (k + 1) * self.batch)
        w = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        idx, w = idx[self.host[0]:self.host[1]], w[self.host[0]:self.host[1]]
        out = np.empty((idx.size, *self.split.image_shape), np.uint8)
        for j, i in enumerate(idx):
            out[j] = load_one(self.split.source, i, self.transform, None,
                              self.split.image_shape, self.split.name)
        return out, self.split.labels[idx].astype(np.int32), w


def num_eval_batches(n: int, batch: int) -> int:
    return -(-n // batch)


def check_workers(workers) -> int:
    """``dataset.workers`` as a number of processes (-1: one per CPU core)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < -1:
        raise DataError(f"dataset.workers must be a whole number >= -1 (worker processes; "
                        f"0: in this process; -1: one per CPU core), got {workers!r}")
    return (os.cpu_count() or 1) if workers == -1 else workers


def _worker_init(index: int, count: int):
    """In each worker process: one OpenCV thread (the workers already fill the cores)."""
    from jaxvision.data import decode
    decode.single_threaded()


def _iterate(fn: Callable[[int], Any], elements: range, workers: int,
             buffer: int) -> Iterator:
    """``fn(e)`` for each ``e`` of ``elements``, in order, made by ``workers`` processes
    (grain's ``mp_prefetch``) or, with 0, by one thread of this process."""
    import grain

    ds = grain.MapDataset.range(elements.start, elements.stop).map(fn)
    if workers > 0:
        from absl import flags
        if not flags.FLAGS.is_parsed():
            # grain reads its own absl flags when it starts workers; outside an absl app
            # (a script, a notebook, tests) they keep their defaults
            flags.FLAGS.mark_as_parsed()
        # one thread per worker: the batches are the unit of parallelism, and more threads
        # would only contend for the same cores
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=max(1, buffer)),
            worker_init_fn=_worker_init)
    else:
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                     prefetch_buffer_size=max(1, buffer)))
    return iter(it_ds)


class StepLoader:
    """``loader(step)`` -> this host's (images, labels) of ``step``.

    Reads ahead in worker processes from the step last asked for; asking for any other
    step than the next one (a resumed run, a test) restarts the workers at that step.
    Because a batch is a function of the step, the restart gives the same batches.
    """

    def __init__(self, batches: TrainBatches, total_steps: int, workers: int, buffer: int = 2):
        workers = check_workers(workers)
        self.batches, self.total, self.workers, self.buffer = batches, total_steps, workers, buffer
        self._it, self._next = None, None

    def __call__(self, step: int):
        if self._it is None or step != self._next:
            self.close()
            self._it = _iterate(self.batches, range(step, max(self.total, step + 1)),
                                self.workers, self.buffer)
        self._next = step + 1
        return next(self._it)

    def close(self):
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None


def eval_iterator(split: Split, batch: int, host: slice, transform, workers: int,
                  buffer: int = 2) -> Iterator:
    """This host's (images, labels, weights) of every evaluation batch of a streaming
    split, made by the same worker processes as training batches."""
    start, stop, _ = host.indices(batch)
    fn = EvalBatches(split, batch, (start, stop), transform)
    it = _iterate(fn, range(num_eval_batches(len(split), batch)), check_workers(workers), buffer)
    try:
        yield from it
    finally:
        if hasattr(it, "close"):
            it.close()


def host_range(host: slice, global_batch: int) -> tuple[int, int]:
    start, stop, _ = host.indices(global_batch)
    return start, stop


def attach_transforms(data, ds_cfg, model_name: str, input_size) -> tuple[Any, Any]:
    """The (train, eval) transforms (``jaxvision.data.transforms``, as ``dataset`` config
    says) that the streaming splits of ``data`` are read through; None for an in-memory
    split.  Their output is the model's ``input_size`` or ``dataset.image_size`` and
    ``dataset.channels`` when set; the streaming splits' ``image_shape`` becomes it."""
    if data.train.in_memory and data.eval.in_memory:
        return None, None
    from jaxvision.data import transforms

    h, w, c = input_size
    if ds_cfg.get("image_size"):
        h, w = (int(v) for v in ds_cfg.image_size)
    size = (h, w, int(ds_cfg.get("channels") or c))
    train_t = eval_t = None
    if not data.train.in_memory:
        train_t = transforms.train_transform(ds_cfg, model_name, size)
        data.train.image_shape = (train_t.size, train_t.size, train_t.channels)
    if not data.eval.in_memory:
        eval_t = transforms.eval_transform(ds_cfg, model_name, size)
        data.eval.image_shape = (eval_t.size, eval_t.size, eval_t.channels)
    return train_t, eval_t
