"""jaxvision.plot draws a PNG of loss, learning rate and eval accuracy for several runs."""
import json

import pytest
from PIL import Image

from jaxvision import plot

pytest.importorskip("matplotlib")


def _workdir(path, scale):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for s in range(1, 21):
            f.write(json.dumps({"step": s, "train_loss": scale / s, "learning_rate": 0.1 / s})
                    + "\n")
            if s % 10 == 0:
                f.write(json.dumps({"step": s, "eval_accuracy": 0.5 + s / 100}) + "\n")
        f.write('{"step": 21, "train_lo')  # a line cut by a kill is skipped
    return str(path)


def test_plot_writes_a_png(tmp_path, capsys):
    runs = [_workdir(tmp_path / "a", 1.0), _workdir(tmp_path / "b", 2.0)]
    out = tmp_path / "curves.png"
    assert plot.main([*runs, "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    assert plot.main([str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
