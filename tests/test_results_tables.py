"""Tables in docs/ generated from results files stay in sync with them."""
import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments",
                                                                      name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mnist_record_table_is_generated_from_its_results(tmp_path):
    mod = _script("mnist_record")
    if not os.path.exists(mod.OUT):
        pytest.fail(f"{mod.OUT} is missing: docs/mnist_record.md has no source")
    with open(mod.OUT) as f:
        results = json.load(f)
    for name, row in results["rows"].items():
        assert name in mod.ROWS, f"results row {name!r} is no longer defined by the script"
        errs = [r["error"] for r in row["runs"]]
        assert abs(row["mean_error"] - sum(errs) / len(errs)) < 1e-12, name
    want = mod.write_table(results, str(tmp_path / "table.md"))
    with open(mod.TABLE) as f:
        assert f.read() == want, "rerun: python experiments/mnist_record.py --table"
