"""jaxvision.predict: class names saved by the trainer, printed for image files."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxvision import checkpoint as ckpt
from jaxvision import create_model, predict, train
from jaxvision.data.sources import load_bundled
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """test_cnn trained for a few steps on bundled digits (the tiny model does not learn
    MNIST in a test's budget: the test checks names, not accuracy)."""
    wd = tmp_path_factory.mktemp("mnist")
    train.train_and_evaluate(tiny_config(**{"num_train_steps": 4, "checkpoint_every_steps": 4,
                                            "eval_every_steps": 4, "log_every_steps": 4}),
                             str(wd))
    return wd


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """One held-out digit of each class as a PNG file, named by its label."""
    d = tmp_path_factory.mktemp("digits")
    val = load_bundled()["validation"]
    paths = []
    for k in range(10):
        i = int(np.flatnonzero(val.labels == k)[0])
        paths.append(str(d / f"{k}.png"))
        Image.fromarray(val.images[i, :, :, 0]).save(paths[-1])
    return paths


def test_predict_mnist_run_prints_digit_names(mnist_run, digits, capsys):
    assert json.load(open(mnist_run / "classes.json"))["names"] == [str(i) for i in range(10)]
    assert predict.main(["--workdir", str(mnist_run), "--json", "--top_k", "3", *digits]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == digits
    # the printed name is the model's own prediction, computed here independently
    variables, _ = ckpt.restore_variables(str(mnist_run))
    model = create_model("test_cnn", num_classes=10)
    x = np.stack([np.asarray(Image.open(p))[..., None] for p in digits]) / 255.0
    x = (x - np.asarray([0.1307])) / np.asarray([0.3081])
    logits = model.apply({k: v for k, v in variables.items() if v}, x.astype(np.float32))
    for r, row in zip(results, np.asarray(logits)):
        assert r["top"][0]["class"] == str(int(np.argmax(row)))
        assert len(r["top"]) == 3 and r["top"][0]["prob"] >= r["top"][1]["prob"]
    # plain text: one line per file, with the name
    predict.main(["--workdir", str(mnist_run), "--top_k", "1", digits[0]])
    line = capsys.readouterr().out.strip()
    assert line.startswith(digits[0] + ": ") and "(" in line


def test_predict_folder_run_prints_folder_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for cls, level in (("cat", 40), ("dog", 200)):
        os.makedirs(root / cls)
        for i in range(8):
            img = np.clip(level + rng.normal(0, 20, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    wd = tmp_path / "run"
    train.train_and_evaluate(tiny_config(**{
        "dataset.source": "folder", "dataset.path": str(root), "dataset.validation_size": 4,
        "dataset.train_size": 0, "batch_size": 8, "num_train_steps": 2, "eval_every_steps": 2,
        "dataset.channels": 1, "dataset.image_size": (28, 28), "eval_batch_size": 8}), str(wd))
    assert json.load(open(wd / "classes.json"))["names"] == ["cat", "dog"]
    capsys.readouterr()  # the training log
    assert predict.main(["--workdir", str(wd), "--json", str(root / "cat")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 8
    assert {t["class"] for r in results for t in r["top"]} == {"cat", "dog"}


def test_missing_image_is_a_clear_error(tmp_path, capsys):
    assert predict.main(["--workdir", str(tmp_path), str(tmp_path / "nope.png")]) == 2
    assert f"image file {tmp_path / 'nope.png'} does not exist" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(b"")
    assert predict.main(["--workdir", str(tmp_path), str(tmp_path / "x.png")]) == 2
    assert "not a jaxvision workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--model", "resnet50", str(tmp_path / "x.png")])
    assert "--model needs --pretrained" in capsys.readouterr().err
