"""Whole models through the default ``auto`` convolution plan, as a user's single-device
process gets it (the test process has 8 simulated devices, where ``auto`` never takes
oneDNN's primitives): forward and gradients (training mode) of a few families in a process of
its own, recording the plans traced, and ``JAXVISION_CONV_IMPL=lax``, both measured against
the same computation in float64.

The CPU rule's size limits (oneDNN from 1G multiply-adds per conv, Winograd from 250M) are
lowered in that process (``default_plan_driver.SMALL``), so that tiny models take the same
decisions ImageNet-size ones do.
Tolerance, per tensor, relative to its largest magnitude: 1e-4 of the float64 value, or at most
twice the error of XLA's float32 convolutions (test_seresnext's ``layer1_0/bn1/scale``
gradient: default plan 0.7%, XLA float32 1.0% off the float64 value; every other tensor
within 5e-6).
"""
import json
import os
import subprocess
import sys

import pytest

DRIVER = os.path.join(os.path.dirname(__file__), "default_plan_driver.py")
RTOL = 1e-4


def _run(*args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAXVISION_CONV_IMPL", "JAXVISION_XLA_CPU_CONV")}
    proc = subprocess.run([sys.executable, DRIVER, *args], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def _check(rows):
    for r in rows:
        assert r["devices"] == 1, r
        assert r["lax_forms"] in ([], ["lax"]), r
        # each tensor: the default plan is within RTOL of the float64 truth, or at most twice
        # as far from it as XLA's own float32 convolutions are (a gradient that is a nearly
        # cancelling sum, such as a batch-norm scale's, carries float32 rounding of ~1%
        # whichever way it is summed)
        bad = {k: e for k, e in r["errors"].items() if e[0] > max(RTOL, 2 * e[1])}
        assert not bad, (r["model"], bad)
        assert len(r["errors"]) > 2, r  # logits, input gradient and parameter gradients


def test_auto_plan_in_whole_models_matches_lax():
    pytest.importorskip("jaxvision.layers.onednn")
    from jaxvision.layers import onednn
    rows = _run("--small", "test_resnet:32:4", "test_seresnext:32:4", "test_densenet:32:4")
    assert [r["model"] for r in rows] == ["test_resnet", "test_seresnext", "test_densenet"]
    _check(rows)
    forms = {f for r in rows for f in r["forms"]}
    assert {"winograd2", "winograd4"} & forms, forms
    if onednn.available():
        assert "onednn" in forms, forms
