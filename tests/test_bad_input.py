"""Bad input fails before anything is compiled, with a message that names the problem,
and leaves what an earlier run saved untouched."""
import gzip
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import jaxvision
from jaxvision import finetune, train
from jaxvision.checkpoint import CheckpointError
from jaxvision.config import validate_keys
from jaxvision.data.pipeline import validate_split
from jaxvision.data.sources import DataError, Split, read_idx
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(folder, images, labels, prefix="train", gz=True):
    os.makedirs(folder, exist_ok=True)
    opener = gzip.open if gz else open
    ext = ".gz" if gz else ""
    with opener(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", *images.shape))
        f.write(images.astype(np.uint8).tobytes())
    with opener(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", labels.shape[0]))
        f.write(labels.astype(np.uint8).tobytes())


def idx_config(path, **kw):
    return tiny_config(**{"dataset.source": "idx", "dataset.path": str(path),
                          "dataset.validation_size": 16, "num_classes": 10}, **kw)


@pytest.fixture
def compile_counter(monkeypatch):
    """Records every train/eval step that gets built (there must be none on bad input)."""
    from jaxvision import evaluate
    calls = []
    for module, name in ((train, "make_train_step"), (evaluate, "make_eval_step")):
        original = getattr(module, name)

        def recording(*a, _original=original, _name=name, **k):
            calls.append(_name)
            return _original(*a, **k)
        monkeypatch.setattr(module, name, recording)
    return calls


def test_idx_round_trip_gz_and_plain(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 10, 40)
    write_idx(tmp_path / "gz", imgs, labels, gz=True)
    write_idx(tmp_path / "plain", imgs, labels, gz=False)
    write_idx(tmp_path / "plain", imgs[:8], labels[:8], prefix="t10k", gz=False)
    from jaxvision.data.sources import load_idx
    a, b = load_idx(str(tmp_path / "gz")), load_idx(str(tmp_path / "plain"))
    np.testing.assert_array_equal(a["train"].images[..., 0], imgs)
    np.testing.assert_array_equal(b["train"].labels, labels)
    assert len(b["test"]) == 8 and "test" not in a


def test_labels_outside_range_are_named(tmp_path, compile_counter):
    labels = np.arange(64) % 12  # 10 and 11 are out of range for num_classes=10
    write_idx(tmp_path, np.zeros((64, 28, 28)), labels)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\).*label 1[01] at index"):
        train.train_and_evaluate(idx_config(tmp_path), str(tmp_path / "w"))
    assert not compile_counter


def test_negative_labels_in_memory_split():
    split = Split(np.array([0, -1, 2]), 3, "train", images=np.zeros((3, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match=r"label -1 at index 1"):
        validate_split(split, 3, (8, 8, 1), "train")


def test_wrong_channels_dtype_and_rank():
    ok = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(DataError, match=r"1 channel\(s\) but the model takes 3"):
        validate_split(Split(np.zeros(4, int), 2, "t", images=ok), 2, (8, 8, 3), "train")
    with pytest.raises(DataError, match="must be uint8.*float32"):
        validate_split(Split(np.zeros(4, int), 2, "t", images=ok.astype(np.float32)), 2,
                       (8, 8, 1), "train")
    with pytest.raises(DataError, match=r"must be \(N, H, W, C\)"):
        validate_split(Split(np.zeros(4, int), 2, "t", images=ok[..., 0]), 2, (8, 8, 1), "train")


def test_channel_mismatch_through_train(tmp_path, compile_counter):
    cfg = tiny_config(model="simple_cnn")  # takes RGB; the bundled digits are grayscale
    with pytest.raises(DataError, match=r"1 channel\(s\) but the model takes 3"):
        train.train_and_evaluate(cfg, str(tmp_path))
    assert not compile_counter


def test_empty_and_corrupt_idx(tmp_path):
    write_idx(tmp_path / "empty", np.zeros((0, 28, 28)), np.zeros(0))
    with pytest.raises(DataError, match="empty|fewer than one global batch|validation_size"):
        train.train_and_evaluate(idx_config(tmp_path / "empty"), str(tmp_path / "w1"))
    write_idx(tmp_path / "cut", np.zeros((64, 28, 28)), np.zeros(64))
    path = tmp_path / "cut" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(str(path))
    path.write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(str(path))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        train.train_and_evaluate(idx_config(tmp_path / "none"), str(tmp_path / "w2"))


def test_batch_not_divisible_by_devices(tmp_path, compile_counter):
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the number of "
                                         r"devices \(8\)"):
        train.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))
    assert not compile_counter


def test_bn_group_size_must_divide_batch(tmp_path):
    with pytest.raises(ValueError, match="bn_group_size=5 must divide batch_size=32"):
        train.train_and_evaluate(tiny_config(bn_group_size=5), str(tmp_path))


def test_config_typo_has_did_you_mean():
    cfg = tiny_config()
    with pytest.raises(AttributeError, match='Did you mean "batch_size"'):
        cfg.batch_sze = 3
    import ml_collections
    loose = ml_collections.ConfigDict(tiny_config().to_dict())
    loose.lerning_rate = 0.1
    with pytest.raises(KeyError, match="'lerning_rate'.*Did you mean 'learning_rate'"):
        validate_keys(loose)
    loose = ml_collections.ConfigDict(tiny_config().to_dict())
    loose.dataset.sorce = "idx"
    with pytest.raises(KeyError, match="'dataset.sorce'.*'dataset.source'"):
        validate_keys(loose)


def test_config_typo_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jaxvision.train", "--config",
                           os.path.join(REPO, "experiments/configs/mnist_cnn.py"), "--workdir",
                           str(tmp_path), "--config.batch_sze=64"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "batch_sze" in proc.stderr and "batch_size" in proc.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_unknown_model_and_source_and_loss(tmp_path):
    with pytest.raises(jaxvision.UnknownModelError, match="mnist_cnn"):
        train.train_and_evaluate(tiny_config(model="mnist_cn"), str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset.source 'bundle'.*'bundled'"):
        train.train_and_evaluate(tiny_config(**{"dataset.source": "bundle"}), str(tmp_path))
    with pytest.raises(ValueError, match="unknown loss 'xent'"):
        train.train_and_evaluate(tiny_config(loss="xent"), str(tmp_path))


def test_missing_init_from_is_an_error_not_a_fresh_start(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train.train_and_evaluate(tiny_config(init_from=str(tmp_path / "nope")),
                                 str(tmp_path / "w"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        train.train_and_evaluate(tiny_config(init_from=str(tmp_path / "empty")),
                                 str(tmp_path / "w2"))


def test_bad_input_keeps_earlier_checkpoints(tmp_path):
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ValueError):
        train.train_and_evaluate(tiny_config(num_train_steps=4, batch_size=12), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_restore_into_other_architecture_names_the_parameter(tmp_path, capsys):
    capsys.readouterr()
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path / "a"))
    # the run ends with one summary line, read back from its metrics.jsonl
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"Summary: 2 steps, train loss \d+\.\d{4}, eval accuracy \d+\.\d\d% "
                        r"\(error \d+\.\d\d%; best \d+\.\d\d% at step 2\), [\d,]+ img/s "
                        r"\(median\), wall \d:\d\d:\d\d; workdir " + re.escape(str(tmp_path / "a")),
                        last), last
    # initialising another architecture from the checkpoint (fine-tuning: params and batch
    # stats only): only the classifier head may be re-initialised (another class count), so
    # a hidden layer of another width is an error naming it and both shapes
    cfg = tiny_config(num_train_steps=4, init_from=str(tmp_path / "a"))
    cfg.model_kwargs.hidden = 24  # a different architecture than the checkpoint's
    with pytest.raises(finetune.FineTuneError, match="does not fit test_cnn") as e:
        train.train_and_evaluate(cfg, str(tmp_path / "b"))
    assert re.search(r"params/fc1/kernel: \(\d+, 24\) here, \(\d+, 16\) in the source",
                     str(e.value)), e.value
    assert "params/fc1/bias: (24,) here, (16,) in the source" in str(e.value)
    assert not os.path.exists(tmp_path / "b" / "checkpoints" / "0")
    assert not capsys.readouterr().out.count("Initialised from")
    # resuming with it is refused earlier: the architecture is part of the run's identity
    cfg = tiny_config(num_train_steps=4)
    cfg.model_kwargs.hidden = 24
    with pytest.raises(ValueError, match=r"model_kwargs: \{\} -> \{'hidden': 24\}"):
        train.train_and_evaluate(cfg, str(tmp_path / "a"))


def test_training_crop_the_model_cannot_evaluate(tmp_path, compile_counter):
    """A crop that changes the input size of a size-dependent model is named before any step
    is compiled, instead of failing at the first evaluation."""
    cfg = tiny_config(augment="random_crop(24, pad=0)")
    with pytest.raises(ValueError, match=r"initialised on 24x24 .*random_crop\(24, pad=0\).*"
                                         r"cannot take the 28x28 evaluation images"):
        train.train_and_evaluate(cfg, str(tmp_path))
    assert not compile_counter
