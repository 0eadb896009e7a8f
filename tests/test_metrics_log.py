"""The metrics log: a JSON line per row and TensorBoard scalars, without importing torch."""
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

_SCRIPT = """
import os, sys
from jaxvision.metrics_log import MetricWriter
w = MetricWriter(sys.argv[1])
w.write({"step": 3, "train_loss": 0.25})
w.close()
print("torch imported by the writer:", "torch" in sys.modules)
import importlib.util
if importlib.util.find_spec("torch") is not None:
    import torch  # still importable afterwards
    print("torch", torch.__version__)
"""


def test_rows_reach_jsonl_and_tensorboard_without_importing_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "torch imported by the writer: False" in out, out
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 3, "train_loss": 0.25}]
    (events,) = os.listdir(tmp_path / "tensorboard")
    assert events.startswith("events") and b"train_loss" in (
        tmp_path / "tensorboard" / events).read_bytes()
