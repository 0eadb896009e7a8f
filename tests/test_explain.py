"""python -m jaxvision.explain: the plan of every convolution, for every family."""
import jax
import pytest

from jaxvision import explain
from jaxvision.layers import conv_impl
from jaxvision.registry import list_models

FAMILIES = list_models("test_*")


@pytest.mark.parametrize("name", FAMILIES)
def test_explain_lists_every_convolution_of_each_family(name):
    rows = explain.explain(name, batch=2)
    for r in rows:
        assert r["module"] and r["reason"], r
        assert len(r["plan"]) == 3 and set(r["plan"]) <= set(explain.FORMS), r
        # this test process has several devices: oneDNN's primitives are never chosen
        assert jax.device_count() > 1 and "onednn" not in r["plan"], r
    if name not in ("test_mlp", "test_highway_mlp"):
        assert rows, f"{name}: no convolution found"
        assert all(r["macs"] > 0 for r in rows), rows
    # the same model traced with XLA's own convolutions says so, row for row
    lax_rows = explain.explain(name, batch=2, conv="lax")
    assert [r["module"] for r in lax_rows] == [r["module"] for r in rows]
    assert all(r["plan"] == ("lax",) * 3 and r["reason"].startswith("kernels.conv=lax")
               for r in lax_rows)


def test_reasons_follow_the_geometry():
    rows = {r["module"]: r for r in explain.explain("test_convnext", batch=2)}
    dw = [r for m, r in rows.items() if m.endswith("conv_dw")]
    assert dw and all(r["plan"] == ("shift",) * 3 and "depthwise" in r["reason"] for r in dw)
    rows = explain.explain("test_resnet", batch=2, conv="matmul")
    assert all("lax" not in r["plan"] and "matmul" in r["reason"] for r in rows)
    # the recorded plan is conv_plan's for that geometry (before any dtype fallback)
    with conv_impl.recording() as records:
        jax.eval_shape(lambda x, w: conv_impl.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), impl="auto"),
            jax.ShapeDtypeStruct((8, 14, 14, 64), "float32"),
            jax.ShapeDtypeStruct((3, 3, 64, 64), "float32"))
    (r,) = records
    assert r["chosen"] == conv_impl.conv_plan(r["geometry"], "auto", "cpu")


def test_command_line_prints_a_row_per_convolution(capsys):
    rows = explain.main(["--model", "test_resnet", "--input", "32", "--batch", "4"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test_resnet, batch 4, input 32, kernels.conv=")
    assert f"{len(rows)} convolutions" in out[0]
    assert len(out) == 2 + len(rows) and out[1].startswith("module")
    with pytest.raises(SystemExit):
        explain.main(["--model", "test_resnet", "--batch", "0"])
