"""Every registered model: a training step on its tiny variant, and golden parameter counts
for every full-size model (computed with jax.eval_shape: no memory, no compute)."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxvision
from jaxvision.train import apply_train
from jaxvision.utils import param_count
from tests.quick_compile import jit_o0

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")


def _golden():
    table = {}
    for path in sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.json"))):
        with open(path) as f:
            for k, v in json.load(f).items():
                assert k not in table, f"{k} has a golden count in two files"
                table[k] = v
    return table


GOLDEN = _golden()
FULL_SIZE = jaxvision.list_models(exclude="test_*")
TINY = jaxvision.list_models("test_*")


def test_registry_lists_sorted_and_filters():
    names = jaxvision.list_models()
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(n.startswith("test_") for n in TINY) and TINY
    assert "mnist_cnn" in jaxvision.list_models("mnist*")


def test_unknown_model_lists_close_matches():
    with pytest.raises(jaxvision.UnknownModelError, match="mnist_cnn"):
        jaxvision.create_model("mnist_cnnn")


def test_unknown_kwarg_names_model_and_fields():
    with pytest.raises(TypeError, match="mnist_cnn.*dropout_rate"):
        jaxvision.create_model("mnist_cnn", dropout_rat=0.1)


@pytest.mark.parametrize("name", FULL_SIZE + TINY)
def test_model_cfg_contract(name):
    cfg = jaxvision.model_cfg(name)
    h, w, c = cfg["input_size"]
    assert h > 0 and w > 0 and c in (1, 3)
    assert len(cfg["mean"]) == len(cfg["std"]) == c
    assert 0 < cfg["crop_pct"] <= 1 and cfg["num_classes"] >= 0


def test_every_full_size_model_has_a_golden_count():
    missing = [n for n in FULL_SIZE if n not in GOLDEN]
    assert not missing, f"no golden parameter count for: {missing}"
    stale = [n for n in GOLDEN if n not in FULL_SIZE]
    assert not stale, f"golden counts for unregistered models: {stale}"


@pytest.mark.parametrize("name", [n for n in FULL_SIZE if n in GOLDEN])
def test_golden_param_count(name):
    model = jaxvision.create_model(name)
    assert param_count(model, jaxvision.model_cfg(name)["input_size"]) == GOLDEN[name]


@pytest.mark.parametrize("name", TINY)
def test_tiny_variant_trains(name):
    """One SGD step: finite loss, output (B, num_classes), a non-zero gradient everywhere."""
    cfg = jaxvision.model_cfg(name)
    model = jaxvision.create_model(name)
    h, w, c = cfg["input_size"]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, h, w, c)), jnp.float32)
    # jitted init with 'rbg' keys: eager init compiles one RNG kernel per parameter
    init = jit_o0(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False))
    variables = init(jax.random.key(0, impl="rbg"), x)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    labels = jnp.arange(4) % cfg["num_classes"]

    def loss_fn(p):
        # the trainer's own forward pass: passes targets to models that take them and adds
        # the auxiliary losses they sow (GoogLeNet's side heads, CapsNet's decoder)
        targets = jax.nn.one_hot(labels, cfg["num_classes"])
        logits, _, aux = apply_train(model, p, rest.get("batch_stats", {}), x, targets,
                                     jax.random.key(2))
        assert logits.shape == (4, cfg["num_classes"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean() + aux

    loss, grads = jit_o0(jax.value_and_grad(loss_fn))(params)
    assert np.isfinite(float(loss))
    # checked on the host: eager jnp ops would compile one kernel per distinct leaf shape
    grads, params = jax.device_get((grads, params))
    zero = [jax.tree_util.keystr(k) for k, g in jax.tree_util.tree_leaves_with_path(grads)
            if not np.any(g != 0)]
    assert not zero, f"zero gradient for {zero}"
    assert all(np.all(np.isfinite(p - 0.01 * g))
               for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads)))


def test_docs_model_table_lists_every_model_with_its_golden_count():
    """docs/models.md's table (experiments/model_table.py) is current: one row per registered
    full-size model, and every count equal to the golden one."""
    doc = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "models.md")
    if not os.path.exists(doc):
        pytest.skip("docs/models.md is not next to the tests (installed package)")
    with open(doc) as f:
        text = f.read()
    block = text.split("<!-- model-table -->")[1].split("<!-- /model-table -->")[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = int(cells[3].replace(",", ""))
    assert sorted(rows) == FULL_SIZE
    wrong = {n: (rows[n], GOLDEN[n]) for n in rows if n in GOLDEN and rows[n] != GOLDEN[n]}
    assert not wrong, wrong
