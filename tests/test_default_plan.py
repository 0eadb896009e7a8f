"""Whole models through the default ``auto`` convolution plan, as a user's single-device
process gets it (the test process has 8 simulated devices, where ``auto`` never takes
oneDNN's primitives): forward and gradients (training mode) of a few families in a process of
its own, recording the plans traced, against ``JAXVISION_CONV_IMPL=lax``.

The CPU rule's size limits (oneDNN from 1G multiply-adds per conv, Winograd from 250M) are
lowered in that process (``default_plan_driver.SMALL``), so that tiny models take the same
decisions ImageNet-size ones do.
Tolerance: 1e-4 of each tensor's largest magnitude (measured: <= 3e-6).
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
        e = r["errors"]
        assert e["logits"] <= RTOL and e["input_grad"] <= RTOL, r
        assert e["param_grad"][0] <= RTOL, r


def test_auto_plan_in_whole_models_matches_lax():
    pytest.importorskip("jaxvision.layers.onednn")
    from jaxvision.layers import onednn
    rows = _run("--small", "test_resnet:32:4", "test_resnet_bottleneck:32:4",
                "test_densenet:32:4")
    assert [r["model"] for r in rows] == ["test_resnet", "test_resnet_bottleneck",
                                          "test_densenet"]
    _check(rows)
    forms = {f for r in rows for f in r["forms"]}
    assert {"winograd2", "winograd4"} & forms, forms
    if onednn.available():
        assert "onednn" in forms, forms
