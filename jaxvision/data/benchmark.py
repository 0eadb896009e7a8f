"""Time the host input pipeline against torchvision's DataLoader on the same files.

    python -m jaxvision.data.benchmark --config experiments/configs/resnet50_imagenet.py \
        --config.dataset.path=DIR --workers 2 [--split train|eval] [--compare torch] \
        [--batches 30] [--batch_size 64] [--rounds 2]

``DIR`` is an image folder (``root/<class>/*.jpg``, or with ``train``/``val`` split folders)
or a packed ArrayRecord folder.  The jaxvision side is exactly what training runs: the
config's train (or eval) transform on the encoded bytes (read, decode, crop, resize, flip),
``dataset.workers`` grain worker processes, batches of uint8 ready for the device.  With
``--compare torch`` torchvision's ``DataLoader`` runs in the same process on the same files
with the same number of workers: ``ImageFolder`` (PIL decode), ``RandomResizedCrop(224)`` +
``RandomHorizontalFlip()`` (train) or ``Resize(256)`` + ``CenterCrop(224)`` (eval), uint8
tensors through ``PILToTensor``.

Each side first makes ``2 * workers + 2`` batches (worker start-up and warm-up, not timed),
then ``--batches`` timed ones; the sides alternate for ``--rounds`` rounds and each side's
best round is reported, so a burst of load on a shared machine hurts neither side alone.
The result is written to ``experiments/results/pipeline_cpu.csv`` (one row per split,
workers and CPU; rerunning replaces it) and the last line printed is::

    pipeline <split>: jaxvision <X> img/s, torchvision <Y> img/s, ratio <X/Y> (<N> workers)
"""
from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import shlex
import sys
import time

import numpy as np

RESULTS = os.path.join("experiments", "results", "pipeline_cpu.csv")
FIELDS = ["split", "workers", "cpu", "cores", "jaxvision_img_s", "torchvision_img_s", "ratio",
          "img_s_per_core", "cores_for_5000_img_s", "load_avg", "batch_size", "timed_images", "model",
          "image_size", "dataset", "versions", "date", "command"]


def cpu_model() -> str:
    from jaxvision.backends.cpu.platform import cpuinfo_field  # the benchmark's own CPU reader
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def versions() -> str:
    from importlib import metadata
    out = []
    for pkg in ("jax", "grain", "numpy", "pillow", "simplejpeg", "PyTurboJPEG",
                "opencv-python-headless", "opencv-python", "torch", "torchvision"):
        try:
            out.append(f"{pkg}={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return " ".join(out)


def open_split(config, split: str):
    """The split to time (a folder's or packed dataset's train split, or its validation
    split for ``eval`` when it has one) and its transform."""
    from jaxvision.data import loader
    from jaxvision.data.pipeline import Datasets
    from jaxvision.data.sources import DataError
    from jaxvision.registry import model_cfg

    path = config.dataset.path
    if not path or not os.path.isdir(path):
        raise DataError(f"--config.dataset.path must be an image folder, got {path!r}")
    input_size = model_cfg(config.model)["input_size"]
    if os.path.exists(os.path.join(path, "meta.json")):
        from jaxvision.data.records import load_records
        splits = load_records(path, image_size=input_size[:2])
    else:
        from jaxvision.data.folder import load_folder
        splits = load_folder(path, image_size=input_size[:2], verify="none")
    evals = splits.get("validation", splits["train"])
    data = Datasets(train=splits["train"], eval=evals, num_classes=evals.num_classes)
    train_tf, eval_tf = loader.attach_transforms(data, config.dataset, config.model, input_size)
    return (data.train, train_tf) if split == "train" else (data.eval, eval_tf)


def time_jaxvision(split_obj, transform, split: str, workers: int, batch: int, batches: int,
                   seed: int = 0):
    """img/s of the jaxvision loader over ``batches`` batches after warm-up."""
    from jaxvision.data import loader, pipeline

    warm = 2 * workers + 2
    if split == "train":
        order = pipeline.BatchOrder(len(split_obj), batch, seed)
        ld = loader.StepLoader(loader.TrainBatches(split_obj, order, (0, batch), transform,
                                                   seed), 10**9, workers, buffer=2)
        get = ld
    else:
        n = loader.num_eval_batches(len(split_obj), batch)
        fn = loader.EvalBatches(split_obj, batch, (0, batch), transform)
        it = loader._iterate(_Cycle(fn, n), range(warm + batches), workers, 2)
        get = lambda _: next(it)  # noqa: E731
    try:
        for s in range(warm):
            x = get(s)[0]
        t0 = time.perf_counter()
        for s in range(warm, warm + batches):
            x = get(s)[0]
        dt = time.perf_counter() - t0
    finally:
        if split == "train":
            ld.close()
        else:
            it.close()
    assert x.dtype == np.uint8 and x.shape[0] == batch, (x.dtype, x.shape)
    return batch * batches / dt, tuple(x.shape[1:])


class _Cycle:
    """Evaluation batch ``k mod n``: more timed batches than the split holds."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def __call__(self, k):
        return self.fn(k % self.n)


def time_torch(root: str, split: str, workers: int, batch: int, batches: int, size=224):
    import torch
    from torchvision import datasets, transforms as T

    torch.manual_seed(0)
    if split == "train":
        tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
    else:
        tf = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), T.PILToTensor()])
    ds = datasets.ImageFolder(root, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=split == "train",
                                     num_workers=workers, drop_last=True,
                                     persistent_workers=workers > 0)
    warm = 2 * workers + 2
    it, done, t0 = None, 0, None
    while done < warm + batches:
        if it is None:
            it = iter(dl)
        try:
            x, _ = next(it)
        except StopIteration:
            it = None
            continue
        done += 1
        if done == warm:
            t0 = time.perf_counter()
    dt = time.perf_counter() - t0
    del it, dl
    assert x.dtype == torch.uint8 and x.shape[0] == batch
    return batch * batches / dt


def write_row(row: dict, path: str = RESULTS):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [r for r in csv.DictReader(f)
                    if (r["split"], r["workers"], r["cpu"]) !=
                    (row["split"], str(row["workers"]), row["cpu"])]
    rows.append({k: row.get(k, "") for k in FIELDS})
    rows.sort(key=lambda r: (r["cpu"], r["split"], int(r["workers"])))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)


def main(argv):
    from absl import flags

    from jaxvision.data import loader
    F = flags.FLAGS
    config = F.config
    split, workers = F.split, loader.check_workers(F.workers)
    batch = F.batch_size or config.batch_size
    src, transform = open_split(config, split)
    if len(src) < batch:
        sys.exit(f"error: the {split} split has {len(src)} images, fewer than a batch of {batch}")
    root = getattr(src.source, "root", None)
    if F.compare == "torch" and root is None:
        sys.exit("error: --compare torch needs an image folder (torchvision reads files)")
    best_j = best_t = 0.0
    load = os.getloadavg()[0]  # the machine may be shared: its load when the run began
    for r in range(F.rounds):
        x, shape = time_jaxvision(src, transform, split, workers, batch, F.batches, config.seed)
        best_j = max(best_j, x)
        msg = f"round {r}: jaxvision {x:,.1f} img/s {shape}"
        if F.compare == "torch":
            y = time_torch(root, split, workers, batch, F.batches, size=shape[0])
            best_t = max(best_t, y)
            msg += f", torchvision {y:,.1f} img/s"
        print(msg, flush=True)
    cores = os.cpu_count() or 1
    per_core = best_j / min(max(workers, 1), cores)
    row = {"split": split, "workers": workers, "cpu": cpu_model(), "cores": cores,
           "jaxvision_img_s": f"{best_j:.1f}", "img_s_per_core": f"{per_core:.1f}",
           "cores_for_5000_img_s": math.ceil(5000 / per_core), "load_avg": f"{load:.1f}",
           "batch_size": batch,
           "timed_images": batch * F.batches, "model": config.model,
           "image_size": "x".join(map(str, shape)), "dataset": os.path.abspath(config.dataset.path),
           "versions": versions(), "date": datetime.datetime.now(datetime.timezone.utc)
           .strftime("%Y-%m-%d %H:%M UTC"),
           "command": "python -m jaxvision.data.benchmark " + shlex.join(sys.argv[1:])}
    if F.compare == "torch":
        row.update(torchvision_img_s=f"{best_t:.1f}", ratio=f"{best_j / best_t:.2f}")
    if F.results:
        write_row(row, F.results)
    print(f"{per_core:,.1f} img/s per worker core; {row['cores_for_5000_img_s']} cores for "
          f"5,000 img/s")
    y = f"{best_t:,.1f}" if F.compare == "torch" else "-"
    ratio = f"{best_j / best_t:.2f}" if F.compare == "torch" else "-"
    print(f"pipeline {split}: jaxvision {best_j:,.1f} img/s, torchvision {y} img/s, ratio "
          f"{ratio} ({workers} workers)")


def cli(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Experiment config: a name (mnist_cnn, "
                                    "mnist_cnn:idx) or a file's path.", lock_config=True)
    flags.DEFINE_integer("workers", 2, "Worker processes on both sides.")
    flags.DEFINE_enum("split", "train", ["train", "eval"], "Which transform to time.")
    flags.DEFINE_enum("compare", "", ["", "torch"], "Also time torchvision's DataLoader.")
    flags.DEFINE_integer("batches", 30, "Timed batches per side and round.")
    flags.DEFINE_integer("batch_size", 64, "Images per batch (0: the config's batch_size).")
    flags.DEFINE_integer("rounds", 2, "Alternating rounds; each side's best is reported.")
    flags.DEFINE_string("results", RESULTS, "CSV to write the row to ('' : none).")
    flags.mark_flags_as_required(["config"])
    from jaxvision.experiment_configs import resolve_command_line  # --config NAME
    app.run(main, argv=resolve_command_line(argv))


if __name__ == "__main__":
    cli()
