"""Parameter counts against timm/torchvision for every registered name that they have.

``tests/golden/reference/param_counts.json`` holds the reference counts, made from
timm/torchvision alone by ``experiments/reference_param_counts.py`` (versions stated in the
file).  jaxvision's own counts are the golden files of ``tests/golden/*.json``, which
``test_models.py::test_golden_param_count`` checks against ``jax.eval_shape`` of every model
(and docs/models.md's model table is checked against the same golden files), so:
jaxvision (eval_shape) == golden == reference == timm.  Where timm is installed the reference
file itself is recomputed from timm on the meta device.
"""
import glob
import json
import os

import pytest

import jaxvision

HERE = os.path.dirname(__file__)
REFERENCE = os.path.join(HERE, "golden", "reference", "param_counts.json")
FULL_SIZE = jaxvision.list_models(exclude="test_*")


def _reference():
    with open(REFERENCE) as f:
        return json.load(f)


def _golden():
    table = {}
    for path in glob.glob(os.path.join(HERE, "golden", "*.json")):
        with open(path) as f:
            table.update(json.load(f))
    return table


def test_reference_file_states_its_provenance():
    prov = _reference()["provenance"]
    assert prov["versions"]["timm"] and prov["versions"]["torchvision"], prov
    assert "timm" in prov["source"] and "jaxvision" not in prov["source"]


def test_every_registered_name_has_a_reference_or_is_listed_without_one():
    ref = _reference()
    listed = set(ref["counts"]) | set(ref["no_reference"])
    assert not set(ref["counts"]) & set(ref["no_reference"])
    assert sorted(listed) == FULL_SIZE, (
        f"regenerate with experiments/reference_param_counts.py; unclassified: "
        f"{sorted(set(FULL_SIZE) - listed)}, stale: {sorted(listed - set(FULL_SIZE))}")


def test_golden_counts_equal_timm_and_torchvision():
    """Every golden count (= jaxvision's eval_shape count) that has a timm/torchvision
    counterpart equals it."""
    golden, ref = _golden(), _reference()["counts"]
    wrong = {n: {"jaxvision": golden.get(n), "reference": c} for n, c in ref.items()
             if golden.get(n) != c}
    assert not wrong, f"parameter counts differ from timm/torchvision: {wrong}"


@pytest.mark.torch
def test_reference_file_matches_installed_timm():
    """Recount every reference model from timm/torchvision (meta device: no memory), and
    check that the names said to have no reference indeed have none."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    from tests.helpers import load_experiment
    script = load_experiment("reference_param_counts")
    doc = _reference()
    names = doc["counts"].keys() | set(doc["no_reference"])
    classes = {n: jaxvision.model_cfg(n)["num_classes"] for n in names}
    have = (set(timm.list_models()) | set(torchvision.models.list_models())) & names
    assert have == set(doc["counts"]), (
        f"names with a timm/torchvision model but no reference count: "
        f"{sorted(have - set(doc['counts']))}")
    fresh = script.reference_counts((n, classes[n]) for n in sorted(have))
    stale = {n: (doc["counts"][n], fresh[n]) for n in fresh if fresh[n] != doc["counts"][n]}
    assert not stale, (f"file (made with {doc['provenance']['versions']}) vs installed "
                       f"{script.versions()}: {stale}")
