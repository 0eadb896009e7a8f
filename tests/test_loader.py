"""The streaming loader: batches (and their random crops) are a function of (seed, step)
whatever the worker count; a killed streaming run resumes bit-exactly; start-up reads no
image; packed ArrayRecord datasets read like the folder they came from."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from jaxvision.config import default_config
from jaxvision.data import loader, pipeline, records
from jaxvision.data.folder import load_folder
from jaxvision.data.pack import pack
from jaxvision.data.sources import DataError, Split
from jaxvision.data.transforms import CenterCropEval, RandomResizedCrop
from tests.helpers import driver_cmd, run_driver, train_losses


def jpeg_folder(root, classes=3, per_class=8, seed=0):
    """Small JPEGs of varied sizes whose content varies across the image, so different
    crops give different pixels."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        os.makedirs(os.path.join(root, f"c{k}"), exist_ok=True)
        for j in range(per_class):
            h, w = rng.integers(24, 48, 2)
            yy, xx = np.mgrid[:h, :w]
            img = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 80 * k)], -1)
            img = (img + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(root, f"c{k}", f"{j}.jpg"), quality=90)
    return str(root)


def folder_batches(root, batch=8, seed=3, size=16):
    split = load_folder(root, image_size=(size, size), verify="none")["train"]
    split.image_shape = (size, size, 3)
    order = pipeline.BatchOrder(len(split), batch, seed)
    return loader.TrainBatches(split, order, (0, batch), RandomResizedCrop(size), seed)


def collect(batches, steps, workers, start=0):
    ld = loader.StepLoader(batches, total_steps=start + steps, workers=workers)
    try:
        return [ld(s) for s in range(start, start + steps)]
    finally:
        ld.close()


def test_batches_depend_on_step_only_not_on_workers_or_restarts(tmp_path):
    batches = folder_batches(jpeg_folder(tmp_path))
    ref = [batches(s) for s in range(6)]  # in this process, no loader at all
    # random crops really differ: the same file at two steps gives two crops
    idx = [set(batches.order.indices(s).tolist()) for s in (0, 3)]
    assert idx[0] & idx[1], "steps 0 and 3 (epochs 0 and 1) share files"
    i = sorted(idx[0] & idx[1])[0]
    a = ref[0][0][list(batches.order.indices(0)).index(i)]
    b = ref[3][0][list(batches.order.indices(3)).index(i)]
    assert not np.array_equal(a, b)
    for workers in (1, 2):  # (0 workers: the other tests)
        got = collect(batches, 6, workers)
        for (x, y), (rx, ry) in zip(got, ref):
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(y, ry)
    # a loader started at step 4 (a resumed run) gives steps 4 and 5 unchanged; so does
    # one asked out of order
    resumed = collect(batches, 2, 0, start=4)
    np.testing.assert_array_equal(resumed[0][0], ref[4][0])
    np.testing.assert_array_equal(resumed[1][0], ref[5][0])
    ld = loader.StepLoader(batches, total_steps=6, workers=0)
    try:
        for s in (2, 3, 1, 5):
            np.testing.assert_array_equal(ld(s)[0], ref[s][0])
    finally:
        ld.close()


def test_host_slice_is_that_part_of_the_global_batch(tmp_path):
    full = folder_batches(jpeg_folder(tmp_path))
    part = loader.TrainBatches(full.split, full.order, (4, 8), full.transform, full.seed)
    np.testing.assert_array_equal(part(2)[0], full(2)[0][4:8])


def test_bad_workers_value_is_refused():
    with pytest.raises(DataError, match="dataset.workers must be a whole number >= -1"):
        loader.StepLoader(None, 1, workers=-2)
    assert loader.check_workers(-1) == os.cpu_count()


def test_truncated_jpeg_is_named_or_replaced(tmp_path):
    root = jpeg_folder(tmp_path)
    bad = os.path.join(root, "c1", "3.jpg")
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 3])
    split = load_folder(root, image_size=(16, 16), verify="none")["train"]
    i = split.source.paths.index(bad)
    t = RandomResizedCrop(16)
    with pytest.raises(DataError, match=r"c1/3\.jpg"):
        loader.load_one(split.source, i, t, [0, 0, 0], (16, 16, 3), "train")
    split = load_folder(root, image_size=(16, 16), verify="none", skip_corrupt=True)["train"]
    with pytest.warns(UserWarning, match=r"c1/3\.jpg"):
        img = loader.load_one(split.source, i, t, [0, 0, 0], (16, 16, 3), "train")
    assert img.shape == (16, 16, 3)
    assert split.source.replacements == {bad: os.path.join(root, "c1", "4.jpg")}


# ---------------------------------------------------------------------------------------
# Start-up reads labels from metadata only
# ---------------------------------------------------------------------------------------

class CountingSource:
    """100,000 examples: labels are metadata; every image read is counted."""

    def __init__(self, n, data):
        self.n, self.data, self.reads = n, data, 0

    def __len__(self):
        return self.n

    def read(self, i):
        self.reads += 1
        return self.data, f"counting[{i}]"

    def __getitem__(self, i):
        raise AssertionError("the training path decodes through the transform")


def test_startup_on_100k_examples_reads_no_image_for_labels(tmp_path, monkeypatch):
    from jaxvision import train

    jpeg_folder(tmp_path / "img", classes=1, per_class=1)
    with open(tmp_path / "img" / "c0" / "0.jpg", "rb") as f:
        data = f.read()
    n = 100_000
    big, small = CountingSource(n, data), CountingSource(16, data)
    labels = np.arange(n, dtype=np.int32) % 10
    ds = pipeline.Datasets(train=Split(labels, 10, "train", source=big),
                           eval=Split(labels[:16], 10, "validation", source=small),
                           num_classes=10)
    seen = {}

    def first_step(step):  # the loader is asked for step 0's batch: nothing read before
        seen.setdefault("reads_before_first_batch", big.reads)
        return real_call(self_ref[0], step)

    real_call = loader.StepLoader.__call__
    self_ref = []

    def spy(self, step):
        self_ref[:] = [self]
        return first_step(step)

    monkeypatch.setattr(train.pipeline, "load_datasets", lambda *a, **k: ds)
    monkeypatch.setattr(loader.StepLoader, "__call__", spy)
    cfg = default_config()
    cfg.model, cfg.batch_size, cfg.num_train_steps = "test_cnn", 8, 1
    cfg.dataset.workers, cfg.dataset.channels = 0, 1
    cfg.eval_every_steps = cfg.checkpoint_every_steps = 1
    cfg.async_checkpoint = False
    result = train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert seen["reads_before_first_batch"] == 0
    assert big.reads == 8          # one batch of one step; no label read an image
    assert small.reads == 16 and result["eval_count"] == 16


def test_tfds_streaming_labels_skip_image_decoding(monkeypatch):
    """tfds splits open with the image left encoded; labels come from the label feature."""
    import tensorflow_datasets as tfds

    from jaxvision.data import sources

    class Info:
        features = {"image": type("F", (), {"shape": (None, None, 3)})(),
                    "label": type("L", (), {"num_classes": 5})()}
        splits = {"train": None}

    class Records:  # image bytes that any decode would choke on
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return {"image": b"\xff\xd8 not decoded", "label": i % 5}

    calls = []

    def data_source(name, split, data_dir, download, decoders=None):
        calls.append(decoders)
        return Records()

    builder = type("B", (), {"info": Info})()
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
    monkeypatch.setattr(tfds, "data_source", data_source)
    out = sources.load_tfds("fake", splits=("train",))
    assert isinstance(calls[0]["image"], tfds.decode.SkipDecoding)
    np.testing.assert_array_equal(out["train"].labels, np.arange(7) % 5)
    assert out["train"].source.read(3)[0] == b"\xff\xd8 not decoded"


# ---------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------

def test_pack_round_trip_reads_like_the_folder(tmp_path):
    root = jpeg_folder(tmp_path / "f", per_class=5)
    meta = pack(root, str(tmp_path / "p"), shards=3, log=lambda *_: None)
    assert meta["classes"] == ["c0", "c1", "c2"]
    folder = load_folder(root, image_size=(16, 16), verify="none")["train"]
    packed = records.load_records(str(tmp_path / "p"), image_size=(16, 16))["train"]
    assert len(packed) == 15 and packed.labels.tolist() == folder.labels.tolist()
    for i in (0, 7, 14):
        with open(folder.source.paths[i], "rb") as f:
            assert packed.source.read(i)[0] == f.read()
    # the same bytes and the same generators: the same batches
    for split in (folder, packed):
        split.image_shape = (16, 16, 3)
    order = pipeline.BatchOrder(15, 5, 0)
    a = loader.TrainBatches(folder, order, (0, 5), RandomResizedCrop(16), 0)
    b = loader.TrainBatches(packed, order, (0, 5), RandomResizedCrop(16), 0)
    np.testing.assert_array_equal(collect(a, 3, 0)[2][0], collect(b, 3, 0)[2][0])
    cfg = default_config()
    cfg.dataset.source, cfg.dataset.path, cfg.dataset.validation_size = \
        "array_record", str(tmp_path / "p"), 3
    ds = pipeline.load_datasets(cfg.dataset, input_size=(16, 16, 3))
    assert len(ds.train) == 12 and len(ds.eval) == 3 and ds.num_classes == 3
    ev = list(loader.eval_iterator(ds.eval, 2, slice(None), CenterCropEval(16), 0))
    assert [w.tolist() for _, _, w in ev] == [[1, 1], [1, 0]]
    with pytest.raises(DataError, match="already holds a packed dataset"):
        pack(root, str(tmp_path / "p"), log=lambda *_: None)
    with pytest.raises(DataError, match="no meta.json"):
        records.load_records(root)


# ---------------------------------------------------------------------------------------
# Kill and resume a streaming run with worker processes
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_streaming_run_with_two_workers_resumes_bit_identically(tmp_path):
    root = jpeg_folder(tmp_path / "data", classes=3, per_class=10)
    cfg = {"model": "test_cnn", "dataset.source": "folder", "dataset.path": root,
           "dataset.validation_size": 6, "dataset.workers": 2, "dataset.channels": 1,
           "batch_size": 8, "learning_rate": 0.05, "log_every_steps": 1,
           "checkpoint_every_steps": 2, "eval_every_steps": 12, "num_train_steps": 12,
           "async_checkpoint": False}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run_driver(ref, cfg)
    proc = subprocess.Popen(driver_cmd(killed, cfg, sleep=0.4), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = killed / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [d for d in (os.listdir(ckdir) if ckdir.exists() else []) if d.isdigit()]
        if len(done) >= 2:
            break
        assert proc.poll() is None, "the run ended before its second checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(done) >= 2
    partial = train_losses(killed) if (killed / "metrics.jsonl").exists() else {}
    assert max(partial, default=0) < 12, "the run ended before the kill"
    run_driver(killed, cfg)
    expected = train_losses(ref)
    assert sorted(expected) == list(range(1, 13))
    assert train_losses(killed) == expected
