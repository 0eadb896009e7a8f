"""A CI sample of the kill harness (experiments/kill_sweep.py runs the full sweep): runs
killed with SIGKILL -- once while an asynchronous checkpoint is being written, once at a
random moment -- and rerun finish bit-identically to an uninterrupted run."""
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def load_harness():
    path = os.path.join(os.path.dirname(HERE), "experiments", "kill_sweep.py")
    spec = importlib.util.spec_from_file_location("kill_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_kill_sample_resumes_bit_identically(tmp_path):
    harness = load_harness()
    tally = harness.sweep(kills=2, seed=1, sleep=0.15, workroot=str(tmp_path),
                          modes=("during_write", "random"))
    assert tally["kills"] == 2 and tally["kills_during_checkpoint_write"] >= 1, tally
    assert tally["lost_runs"] == 0, tally["failures"]
    assert tally["bit_identical_finishes"] == tally["trials"], tally
    assert tally["resumed_runs"] >= 1, tally
