"""Every experiment config loads, builds its model and runs 2 training steps, with its dataset
replaced by synthetic data of the same image shape (one example per device; the large
configs below run on one device).

ImageNet-size configs (224px models of up to 200M parameters) and the deepest CIFAR networks
take minutes each to compile and step on a CPU, so all of them are checked without
compiling (config, model shapes through ``jax.eval_shape``, optimizer chain, augmentation
spec), and each run of the suite steps one of them as well, in rotation: the config whose
index is the day's ordinal (UTC date, fixed by the controller for all workers) modulo their
number, so that a daily CI steps every one within three weeks.
``JAXVISION_TEST_LARGE_CONFIGS`` overrides the rotation: ``1`` steps them all (several
minutes per config on the 2-core development machine), a comma-separated list of ``name`` or
``name:arg`` steps those:

    JAXVISION_TEST_LARGE_CONFIGS=1 python -m pytest -n 2 -q tests/test_configs.py
    JAXVISION_TEST_LARGE_CONFIGS=vgg16_imagenet,wrn28_10_cifar:mixup python -m pytest ..."""
import datetime
import glob
import importlib.util
import math
import os

import pytest

import jaxvision
from jaxvision import train

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "configs")
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py")))


def _config_table():
    path = os.path.join(os.path.dirname(CONFIG_DIR), "config_table.py")
    spec = importlib.util.spec_from_file_location("config_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Each config's docstring gives the command of its own run, then one per variant
# (``--config experiments/configs/<name>.py:<arg>``); every one of them is checked.
_describe = _config_table().describe
ARGS = {n: [d["arg"] for d in _describe(os.path.join(CONFIG_DIR, n + ".py"))[1:]]
        for n in CONFIGS}
ALL = [(n, None) for n in CONFIGS] + [(n, a) for n in CONFIGS for a in ARGS[n]]


def load(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIG_DIR, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.__doc__ and "python -m jaxvision.train" in mod.__doc__, "docstring: the command"
    assert "Paper's figure" in mod.__doc__ or name == "mnist_cnn"
    return mod.get_config(arg)


# Compiling the update step of a 100-to-164-layer network, or of WRN-28-10's 36M
# parameters, takes minutes on a 2-core CPU, so these join the ImageNet configs.
DEEP = [("densenet_bc100_cifar10", None), ("resnet110_cifar10", None),
        ("wrn28_10_cifar", None)] + [
    (n, a) for n in ("resnet110_cifar10", "wrn28_10_cifar") for a in ARGS[n]]
# finetune_folder needs pretrained weights and an image folder: its shapes are checked
LARGE = [p for p in ALL if p[0].endswith("_imagenet")] + DEEP + [
    (n, a) for n, a in ALL if n == "finetune_folder"]


def _label(name, arg):
    return name + (f":{arg}" if arg else "")


def large_slice(setting: str, day: int) -> list:
    """The large configs to step: all (``"1"``), those named, or the day's one in rotation.
    finetune_folder is not among them: it starts from downloaded weights (its fine-tuning
    from a local hub cache runs in test_finetune.py)."""
    rotating = [p for p in LARGE if p[0] != "finetune_folder"]
    if setting == "1":
        return rotating
    if setting:
        names = setting.split(",")
        unknown = sorted(set(names) - {_label(*p) for p in rotating})
        if unknown:
            raise ValueError(f"JAXVISION_TEST_LARGE_CONFIGS: unknown {unknown}; "
                             f"choose from {[_label(*p) for p in rotating]}")
        return [p for p in rotating if _label(*p) in names]
    return [rotating[day % len(rotating)]]


SLICE = large_slice(os.environ.get("JAXVISION_TEST_LARGE_CONFIGS", ""),
                    int(os.environ.get("JAXVISION_TEST_DAY")
                        or datetime.datetime.now(datetime.timezone.utc).date().toordinal()))
STEPPED = [p for p in ALL if p not in LARGE or p in SLICE]


@pytest.mark.parametrize("name,arg", LARGE)
def test_large_config_builds_without_compiling(name, arg):
    import jax

    from jaxvision import optim
    from jaxvision.data.augment import build_augment, build_mix
    from jaxvision.utils import param_shapes
    c = load(name, arg)
    num_classes = c.num_classes or 1000
    model = jaxvision.create_model(c.model, num_classes=num_classes, **dict(c.model_kwargs))
    params = param_shapes(model, jaxvision.model_cfg(c.model)["input_size"])
    assert sum(x.size for x in jax.tree.leaves(params)) > 1e6
    # the model's own parameter tree (shapes only): weight-decay and freeze masks must match it
    tx, lr = optim.make_optimizer(c, params, 1000, 100, c.batch_size)
    jax.eval_shape(tx.init, params)
    assert float(lr(0)) >= 0
    if c.augment:
        build_augment(c.augment)
    if c.mix:
        build_mix(c.mix)


@pytest.mark.parametrize("name,arg", STEPPED)
def test_config_runs_two_steps_on_synthetic_data(name, arg, tmp_path, monkeypatch):
    c = load(name, arg)
    if (name, arg) in LARGE:
        # One device: eight replicas of a full-size model's state (VGG-16: 138M parameters,
        # with gradients and momentum) do not fit in the memory of one CPU test machine.
        # Sharding over several devices is tested on small models in test_train.py.
        import jax

        from jaxvision import sharding
        one_device = sharding.make_mesh(jax.devices()[:1])
        monkeypatch.setattr(sharding, "make_mesh", lambda devices=None: one_device)
    assert jaxvision.is_model(c.model)
    with c.unlocked():
        c.dataset.source = "synthetic"
        c.dataset.train_size = 16
        c.dataset.eval_split = "validation"
        c.num_classes = c.num_classes or 10
        c.batch_size = 8
        c.eval_batch_size = 8
        c.num_train_steps = 2
        c.num_epochs = 0
        c.log_every_steps = 1
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 2
        c.ema_decay = min(c.ema_decay, 0.9)
        # The config, not the convolution kernels, is under test (each CPU formulation is
        # checked against lax in test_conv.py, whole models on the default plan in
        # test_default_plan.py): XLA's own convolutions compile fastest.  A config that names
        # its kernels (mnist_cnn:fast) keeps them.
        c.kernels.conv = c.kernels.conv or "lax"
    try:
        result = train.train_and_evaluate(c, str(tmp_path))
    finally:
        if (name, arg) in LARGE:  # free each large model's programs before the next one
            import gc

            import jax
            jax.clear_caches()
            gc.collect()
    assert result["eval_count"] == 4
    from tests.helpers import read_metrics
    rows = [r for r in read_metrics(tmp_path) if "train_loss" in r]
    assert [r["step"] for r in rows] == [1, 2], rows
    losses = [r["train_loss"] for r in rows]
    assert all(math.isfinite(v) for v in losses), f"non-finite training loss: {losses}"
    assert all(r["skipped"] == 0 for r in rows), f"skipped updates: {rows}"
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows), rows
    assert losses[0] != losses[1], f"the loss did not move: {losses}"


def test_large_config_rotation_covers_every_config():
    rotating = large_slice("1", 0)
    days = [large_slice("", d)[0] for d in range(len(rotating))]
    assert set(days) == set(rotating) and len(set(days)) == len(rotating)
    assert large_slice("vgg16_imagenet,wrn28_10_cifar:mixup", 0) == [
        ("vgg16_imagenet", None), ("wrn28_10_cifar", "mixup")]
    with pytest.raises(ValueError, match="unknown.*vgg17_imagenet"):
        large_slice("vgg17_imagenet", 0)


def test_experiments_readme_tables_every_config():
    """experiments/README.md holds the current output of experiments/config_table.py: a row
    for each config and for each of its variants, each with its command."""
    mod = _config_table()
    with open(mod.README) as f:
        block = f.read().split("<!-- config-table -->\n")[1].split("<!-- /config-table -->")[0]
    assert block == mod.table(), "rerun: python experiments/config_table.py"
    listed = [ln.split("`")[1] for ln in block.splitlines()[2:]]
    assert sorted(listed) == sorted(n + (f":{a}" if a else "") for n, a in ALL)
    for name in CONFIGS:
        entries = mod.describe(os.path.join(CONFIG_DIR, name + ".py"))
        assert entries[0]["arg"] is None, f"{name}: the first command runs the config itself"
        for d in entries:
            assert f"experiments/configs/{d['name'].replace(':', '.py:', 1)}" in d["command"] \
                or d["name"] == name and f"experiments/configs/{name}.py " in d["command"], d
            assert d["paper"] or name == "mnist_cnn", f"{d['name']}: no paper's figure"


# Two configs whose settings differ in fewer leaves than this are one experiment and its
# variant: they belong in one file, the variant selected by get_config's argument.
MIN_DIFFERING_KEYS = 4


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def test_no_two_config_files_are_near_copies():
    """Every config, and every variant of it, differs from those of every other file in at
    least MIN_DIFFERING_KEYS settings."""
    import itertools
    leaves = {(n, a): _leaves(load(n, a).to_dict()) for n, a in ALL}
    missing = object()
    close = []
    for (p, x), (q, y) in itertools.combinations(leaves.items(), 2):
        if p[0] == q[0]:
            continue  # variants of one file
        differ = sorted(k for k in {*x, *y} if x.get(k, missing) != y.get(k, missing))
        if len(differ) < MIN_DIFFERING_KEYS:
            close.append(f"{p} / {q} differ only in {differ}")
    assert not close, "near-copies; make one a variant of the other:\n" + "\n".join(close)


@pytest.mark.parametrize("name", ["resnet50_imagenet", "resnet110_cifar10", "wrn28_10_cifar",
                                  "odenet_mnist", "dropout_mlp_mnist", "mnist_cnn"])
def test_unknown_config_argument_is_refused(name):
    with pytest.raises(ValueError, match="unknown config argument 'cifar10O'"):
        load(name, "cifar10O")
