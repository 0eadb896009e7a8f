"""Smoke test of the benchmark harness on a tiny model (one timed step)."""
import csv
import json

import pytest

from jaxvision import benchmark
from tests.helpers import load_experiment


def test_csv_has_every_column(tmp_path, capsys, monkeypatch):
    from jaxvision.layers.conv_impl import ENV_VAR
    monkeypatch.delenv(ENV_VAR, raising=False)
    out = tmp_path / "bench.csv"
    rows = benchmark.main(["--models", "test_cnn", "--batch-sizes", "2", "--steps", "1",
                           "--warmup", "0", "--conv-impl", "matmul", "--out", str(out)])
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        written = list(reader)
    assert reader.fieldnames == benchmark.COLUMNS
    assert len(rows) == len(written) == 1
    row = written[0]
    assert row["model"] == "test_cnn" and row["batch"] == "2" and row["conv_impl"] == "matmul"
    import os
    assert ENV_VAR not in os.environ  # --conv-impl applies to the benchmark only
    assert (row["height"], row["width"]) == ("28", "28")  # the model's registered size
    assert row["backend"] == "cpu" and row["device"].startswith("cpu: ")
    assert " cores), " in row["device"] and " convolutions, " in row["device"]
    assert row["device"].endswith(" malloc")
    for key in ("train_step_ms", "train_img_s", "train_compile_s", "infer_step_ms",
                "train_gflop_per_step", "params"):
        assert float(row[key]) > 0, key
    assert float(row["train_img_s"]) == pytest.approx(2e3 / float(row["train_step_ms"]))
    assert float(row["train_page_faults"]) >= 0 and float(row["infer_page_faults"]) >= 0
    # The train step does more work than inference (backward + update).
    assert float(row["train_gflop_per_step"]) > float(row["infer_gflop_per_step"])
    # The same counts from shapes alone (for step times measured elsewhere).
    flops = benchmark.step_flops("test_cnn", 2, 28, 28)
    assert float(row["train_gflop_per_step"]) == pytest.approx(flops["train"] / 1e9, rel=1e-6)
    assert float(row["infer_gflop_per_step"]) == pytest.approx(flops["infer"] / 1e9, rel=1e-6)
    table = capsys.readouterr().out
    for header in ("test_cnn", "train ms", "train img/s", "compile s", "train GFLOP"):
        assert header in table, header


def test_time_steps_counts_page_faults_per_call():
    """Each function's minor page faults are counted over its own calls: a call that maps and
    fills 64 MiB afresh (above glibc's largest mmap threshold, so never reused) faults at
    least once per 2 MiB even with transparent huge pages; a call that allocates nothing,
    far less."""
    import numpy as np

    pytest.importorskip("resource")

    def fill():
        a = np.empty(16 << 20, np.float32)
        a.fill(1.0)

    (t_fill, f_fill), (t_noop, f_noop) = benchmark.time_steps([fill, lambda: None], 1, 3)
    assert t_fill > 0 and t_noop >= 0
    assert f_fill >= 32 and f_noop < f_fill / 4


def test_json_and_torch_comparison(tmp_path):
    """``--compare torch`` on a model timm does not have is reported, not fatal."""
    out = tmp_path / "bench.json"
    benchmark.main(["--models", "test_cnn", "--batch-sizes", "2", "--resolutions", "16",
                    "--modes", "infer", "--steps", "1", "--warmup", "0", "--compare", "torch",
                    "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert set(row) == set(benchmark.COLUMNS)
    assert row["height"] == 16 and row["train_step_ms"] is None
    assert row["infer_step_ms"] > 0
    assert row["torch_infer_step_ms"] is None and row["note"]


def test_model_flops_are_nominal_whatever_the_conv_implementation(monkeypatch):
    """The FLOPs reported are the model's own (2 per multiply-add of each convolution),
    however the convolution is computed, and the caller's settings are left as they were."""
    import jax
    import jax.numpy as jnp

    from jaxvision.layers import Conv
    from jaxvision.layers.conv_impl import ENV_VAR

    # Unpadded: XLA does not count products with the zero padding (fvcore-style counters do).
    conv = Conv(16, (3, 3), strides=2, padding=0, use_bias=False)
    x = jnp.ones((4, 13, 13, 8))
    params = conv.init(jax.random.key(0), x)
    nominal = 2 * 4 * 6 * 6 * 16 * (3 * 3 * 8)  # batch * out map * out channels * fan-in
    for impl in ("lax", "matmul"):
        monkeypatch.setenv(ENV_VAR, impl)
        flops = benchmark.model_flops(lambda p, x: conv.apply(p, x), params, x)
        assert flops == pytest.approx(nominal, rel=0.01), impl
        assert benchmark.os.environ[ENV_VAR] == impl


def test_recount_script_fills_flops_and_mfu(tmp_path, capsys):
    """experiments/recount_flops.py recomputes the FLOP columns of a benchmark CSV from shapes,
    and the MFU from the row's step time and its device's peak."""
    recount = load_experiment("recount_flops")

    out = tmp_path / "bench.csv"
    (row,) = benchmark.main(["--models", "test_cnn", "--batch-sizes", "2", "--steps", "1",
                             "--warmup", "0", "--out", str(out)])
    # As if measured on an H100 by a version that got the FLOPs wrong.
    row.update(device="NVIDIA H100 80GB HBM3", train_gflop_per_step=None, train_mfu=None,
               infer_gflop_per_step=1e6, infer_tflop_s=None, infer_mfu=None)
    benchmark.write_rows([row], str(out))
    (new,) = recount.main([str(out), "--write"])
    flops = benchmark.step_flops("test_cnn", 2, 28, 28)
    step_s = row["train_step_ms"] / 1e3
    assert new["train_gflop_per_step"] == pytest.approx(flops["train"] / 1e9)
    assert new["train_mfu"] == pytest.approx(flops["train"] / step_s / 494.5e12)
    assert new["infer_gflop_per_step"] == pytest.approx(flops["infer"] / 1e9)
    with open(out, newline="") as f:
        (written,) = csv.DictReader(f)
    assert float(written["train_mfu"]) == pytest.approx(new["train_mfu"])
    assert "test_cnn" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a benchmark CSV"):
        bad = tmp_path / "other.csv"
        bad.write_text("a,b\n1,2\n")
        recount.main([str(bad)])


def test_profile_traces_three_steps_and_the_summary_sums_them(tmp_path):
    """``--profile DIR`` traces three more steps per mode; experiments/trace_summary.py reads
    the trace and sums the XLA operations by name.  The traced benchmark has a process of its
    own, so that the profiler's process-wide state stays out of this test worker."""
    import subprocess
    import sys
    summary = load_experiment("trace_summary")
    subprocess.run([sys.executable, "-m", "jaxvision.benchmark", "--models", "test_cnn",
                    "--batch-sizes", "2", "--modes", "train", "--steps", "1", "--warmup", "0",
                    "--profile", str(tmp_path)], check=True, capture_output=True, timeout=300)
    trace = summary.newest_trace(str(tmp_path / "test_cnn_b2_28_float32_train"))
    text = summary.summarize(trace, steps=3, top=5)
    assert "operations on: host threads (XLA:CPU thunks)" in text
    rows = [line.split() for line in text.splitlines()[4:]]
    assert 1 <= len(rows) <= 6
    assert all(float(r[0]) >= 0 and r[1].endswith("%") for r in rows)
    assert not any(r[-1].startswith(("$", "ThunkExecutor", "PjitFunction")) for r in rows)
    with pytest.raises(SystemExit, match="no \\*.trace.json.gz"):
        summary.newest_trace(str(tmp_path / "empty"))


def test_trace_summary_reads_a_gpu_trace(tmp_path):
    """On a GPU the operations come from the device's "XLA Ops" line: busy time is the
    union of their intervals, and names lose their numbered suffixes."""
    import gzip
    summary = load_experiment("trace_summary")
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 7, "args": {"name": "XLA Ops"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 8,
             "args": {"name": "Stream #13(Compute)"}}]
    ops = [("fusion.1", 0, 10), ("fusion.22", 5, 10), ("convolution.3", 20, 5)]
    events = meta + [{"ph": "X", "pid": 2, "tid": 7, "name": n, "ts": t, "dur": d}
                     for n, t, d in ops]
    events += [{"ph": "X", "pid": 2, "tid": 8, "name": "kernel", "ts": 0, "dur": 99},
               {"ph": "X", "pid": 1, "tid": 1, "name": "$python", "ts": 0, "dur": 999}]
    path = tmp_path / "t.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    where, found = summary.op_events(events)
    assert where == "/device:GPU:0, XLA Ops" and len(found) == 3
    assert summary.busy_us(found) == 20  # [0, 15) and [20, 25)
    text = summary.summarize(str(path))
    assert "span 0.03 ms, busy 0.02 ms (80% of the span), operations summed 0.03 ms" in text
    fusion = next(line for line in text.splitlines() if line.endswith(" fusion"))
    assert fusion.split()[:3] == ["0.020", "80.0%", "2"]


def test_bad_arguments():
    with pytest.raises(KeyError, match="no_such_model"):
        benchmark.run(["no_such_model"], [2], [None], ["float32"])
    with pytest.raises(ValueError, match="dtypes"):
        benchmark.run(["test_cnn"], [2], [None], ["int8"])
    with pytest.raises(ValueError, match="modes"):
        benchmark.run(["test_cnn"], [2], [None], ["float32"], modes=["backward"])


def test_peak_tflops_table():
    assert benchmark.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert benchmark.peak_tflops("NVIDIA A100-SXM4-40GB", "bfloat16") == 312.0
    assert benchmark.peak_tflops("cpu", "float32") is None


@pytest.mark.torch
def test_torch_comparison_for_a_model_timm_lacks(tmp_path):
    """The CIFAR WRNs are timed against their PyTorch version in jaxvision.reference_torch."""
    pytest.importorskip("timm")
    out = tmp_path / "bench.json"
    benchmark.main(["--models", "test_wrn", "--batch-sizes", "2", "--modes", "train",
                    "--steps", "1", "--warmup", "0", "--compare", "torch", "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["torch_train_step_ms"] > 0 and not row["note"]
    assert row["train_ratio_vs_torch"] == pytest.approx(
        row["train_step_ms"] / row["torch_train_step_ms"])
