"""What the README claims, checked where it happens: inside the compiled training step, through
the tfds source, in ensembles and test-time crops.

Each test recomputes the claimed quantity explicitly (in numpy / plain JAX, from the run's
own checkpoint and data) and compares it with what the library's real path produced.
"""
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import checkpoint as ckpt
from jaxvision import evaluate, train
from jaxvision.data import pipeline
from jaxvision.registry import create_model, model_cfg
from tests.helpers import read_metrics, run_processes, tiny_config


def _checkpoint(workdir, step):
    """(state dict, meta) of checkpoint ``step`` of a training workdir, as numpy."""
    state, meta, _ = ckpt.load(os.path.join(workdir, "checkpoints", str(step)), log=lambda m: 0)
    return jax.tree.map(np.asarray, state), meta


def _rows(workdir, key):
    return {r["step"]: r for r in read_metrics(workdir) if key in r}


def _explicit_loss_and_grad(model, state, x, targets):
    """Mean cross entropy of a training-mode forward pass on normalised float inputs ``x``
    with soft ``targets``, and its gradient: written out, without jaxvision's loss code."""
    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        return -jnp.mean(jnp.sum(targets * logp, -1))
    return jax.jit(jax.value_and_grad(loss))(state["params"])


def _explicit_cutmix(key, images, targets, alpha):
    """CutMix (Yun et al., 2019) as the docs state it, from the same random draws: a box of
    side ratio sqrt(1 - lambda), centre uniform over the pixels, clipped at the borders,
    pasted from the reversed batch; targets weighted by the pasted pixel fraction."""
    kl, kc = jax.random.split(key)
    lam = float(jax.random.beta(kl, alpha, alpha))
    u = np.asarray(jax.random.uniform(kc, (2,)))
    _, h, w, _ = images.shape
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = min(int(np.floor(u[0] * h)), h - 1), min(int(np.floor(u[1] * w)), w - 1)
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
    out = images.copy()
    out[:, y0:y1, x0:x1] = images[::-1, y0:y1, x0:x1]
    frac = (y1 - y0) * (x1 - x0) / (h * w)
    assert 0 < frac < 1, "pick a seed whose box is neither empty nor the whole image"
    return out, (1 - frac) * targets + frac * targets[::-1]


# -------------------------------------------------------------------------------------------
# Two short runs shared by the tests below (made once per test session, even across
# pytest-xdist workers: the first worker to need them trains, the other waits and reads)
# -------------------------------------------------------------------------------------------

TFDS_NAME = "jaxvision_claims_digits"
SMALL_CNN = {"model": "simple_cnn", "model_kwargs.widths": (4, 8), "model_kwargs.hidden": 16,
             "batch_size": 32, "checkpoint_every_steps": 1, "schedule": "constant",
             "momentum": 0.0}
# run "mixed": mixup or CutMix per batch, label smoothing and the linear scaling rule, with
# ten-crop evaluation; run "tfds": the tfds source, with flip evaluation
MIXED = dict(SMALL_CNN, num_train_steps=3, eval_every_steps=3, learning_rate=0.8,
             lr_scaling="linear", label_smoothing=0.1, mix="mixup(alpha=0.4)|cutmix(alpha=1.0)",
             eval_crops="ten_crop", seed=9, **{"dataset.source": "synthetic",
                                                "dataset.train_size": 128})
TFDS = dict(SMALL_CNN, num_train_steps=2, eval_every_steps=2, learning_rate=0.05,
            eval_crops="flip", seed=1, **{"dataset.source": "tfds", "dataset.name": TFDS_NAME,
                                          "dataset.eval_split": "test"})


def tfds_arrays():
    """The images and labels of the tiny tfds dataset, made here (no download)."""
    rng = np.random.default_rng(7)
    return {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                    rng.integers(0, 10, n).astype(np.int64)) for split, n in
            (("train", 64), ("test", 32))}


def prepare_tfds(data_dir):
    """Prepare the tiny dataset in ``data_dir`` with tfds' own builder machinery
    (array_record files, PNG-encoded images, as ``tfds build`` writes them).  The images are
    PNG-encoded here with Pillow: tfds' own encoder needs TensorFlow."""
    import PIL.Image
    import tensorflow_datasets as tfds

    arrays = tfds_arrays()

    def png(a):
        buf = io.BytesIO()
        PIL.Image.fromarray(a).save(buf, format="png")
        return buf.getvalue()

    class Builder(tfds.core.GeneratorBasedBuilder):
        name = TFDS_NAME
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in arrays}

        def _generate_examples(self, split):
            images, labels = arrays[split]
            for i, (x, y) in enumerate(zip(images, labels)):
                yield i, {"image": png(x), "label": int(y)}

    Builder(data_dir=data_dir, file_format="array_record").download_and_prepare()


def tfds_record_order(data_dir, split):
    """Where each of our examples landed: tfds shuffles examples when it writes them, so the
    i-th record is our example ``order[i]`` (read back with tfds' own reader and matched by
    content; every example must be there exactly once)."""
    import tensorflow_datasets as tfds
    images, labels = tfds_arrays()[split]
    where = {x.tobytes(): i for i, x in enumerate(images)}
    ds = tfds.data_source(TFDS_NAME, split=split, data_dir=data_dir, download=False)
    order = np.asarray([where[np.asarray(ds[i]["image"]).tobytes()] for i in range(len(ds))])
    assert sorted(order) == list(range(len(images)))
    assert [int(ds[i]["label"]) for i in range(len(ds))] == labels[order].tolist()
    return order


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    import fcntl
    import json
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # the session's folder, above each worker's
        base = base.parent
    root = base / "claims_runs"
    root.mkdir(exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "done.json"
        if not done.exists():
            prepare_tfds(str(root / "tfds"))
            results = {}
            for name, overrides in (("mixed", MIXED), ("tfds", TFDS)):
                extra = {"dataset.data_dir": str(root / "tfds")} if name == "tfds" else {}
                results[name] = train.train_and_evaluate(tiny_config(**overrides, **extra),
                                                         str(root / name))
            done.write_text(json.dumps(results))
        results = json.loads(done.read_text())
    return {name: (str(root / name), results[name]) for name in results}


def _explicit_step(workdir, cfg, step, images, labels, num_classes, mix=None):
    """Recompute training step ``step + 1`` from checkpoint ``step``: the batch's targets
    (one-hot, smoothed, then mixed as the docs state), the loss, and the SGD update with the
    learning rate the config asks for.  Returns (loss, expected params, new params, op)."""
    state, _ = _checkpoint(workdir, step)
    new, _ = _checkpoint(workdir, step + 1)
    mcfg = model_cfg(cfg.model)
    x = images.astype(np.float32) / 255.0
    eps, k = cfg.label_smoothing, num_classes
    targets = np.eye(k, dtype=np.float32)[labels] * (1 - eps) + eps / k
    op = None
    if mix:
        # the step's keys: (augment, mix, dropout) from the state's key and the step number;
        # with several ops, one key picks the op and the other drives it
        mix_key = jax.random.split(jax.random.fold_in(state["rng"], step), 3)[1]
        ops = [(part.split("(")[0], float(part.split("=")[1].rstrip(")")))
               for part in mix.split("|")]
        pick, key = jax.random.split(mix_key)
        op, alpha = ops[int(jax.random.randint(pick, (), 0, len(ops)))]
        if op == "mixup":
            lam = float(jax.random.beta(key, alpha, alpha))
            assert 0.05 < lam < 0.95, "pick a seed with a visible mix"
            x, targets = lam * x + (1 - lam) * x[::-1], lam * targets + (1 - lam) * targets[::-1]
        else:
            x, targets = _explicit_cutmix(key, x, targets, alpha)
    x = (x - np.asarray(mcfg["mean"], np.float32)) / np.asarray(mcfg["std"], np.float32)
    model = create_model(cfg.model, num_classes=k, **dict(cfg.model_kwargs))
    loss, grads = _explicit_loss_and_grad(model, state, jnp.asarray(x), jnp.asarray(targets))
    from jaxvision import optim
    lr = cfg.learning_rate * (cfg.batch_size / 256 if cfg.lr_scaling == "linear" else 1)
    assert lr == pytest.approx(optim.scaled_learning_rate(cfg, cfg.batch_size))
    expected = jax.tree.map(lambda p, g: p - lr * g, state["params"], grads)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree.leaves(new["params"]), jax.tree.leaves(state["params"])))
    assert moved > 1e-3  # a visible update: a wrong rate would not hide in the tolerance
    return float(loss), expected, new["params"], op


def _assert_params_close(actual, expected):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 actual, expected)


# -------------------------------------------------------------------------------------------
# a) mixup / CutMix / label smoothing / linear LR scaling inside the compiled step
# -------------------------------------------------------------------------------------------

def test_train_step_uses_mixed_smoothed_targets_and_scaled_lr(runs):
    """Steps 2 and 3 of a real run, recomputed from checkpoints 1 and 2: the logged loss is
    the cross entropy against the smoothed-then-mixed targets of that step's batch (one step
    mixup, the other CutMix), and the new parameters are ``params - lr * grad`` with
    ``lr = base_lr * batch / 256`` (plain SGD, constant schedule)."""
    workdir, _ = runs["mixed"]
    cfg = tiny_config(**MIXED)
    data = pipeline.load_datasets(cfg.dataset, None, model_cfg(cfg.model)["input_size"])
    order = pipeline.BatchOrder(len(data.train), cfg.batch_size, cfg.seed)
    rows = _rows(workdir, "train_loss")
    ops = set()
    for step in (1, 2):
        idx = order.indices(step)
        loss, expected, actual, op = _explicit_step(
            workdir, cfg, step, data.train.images[idx], data.train.labels[idx],
            data.num_classes, cfg.mix)
        ops.add(op)
        assert rows[step + 1]["train_loss"] == pytest.approx(loss, rel=1e-5), (step, op)
        _assert_params_close(actual, expected)
        assert rows[step + 1]["learning_rate"] == pytest.approx(0.8 * 32 / 256)
    assert ops == {"mixup", "cutmix"}, "pick a seed whose two checked steps use both ops"


# -------------------------------------------------------------------------------------------
# b) a tfds dataset prepared here, read through dataset.source='tfds'
# -------------------------------------------------------------------------------------------

def _explicit_eval(workdir, step, model_name, images, labels, views):
    """Eval loss and accuracy from checkpoint ``step``: the mean softmax over ``views(x)``
    (a list of image batches), written out."""
    state, meta = _checkpoint(workdir, step)
    mcfg = model_cfg(model_name)
    model = create_model(model_name, num_classes=meta["num_classes"],
                         **dict(tiny_config(**SMALL_CNN).model_kwargs))
    x = (images.astype(np.float32) / 255.0 - np.asarray(mcfg["mean"], np.float32)) \
        / np.asarray(mcfg["std"], np.float32)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)))
    probs = np.mean([np.asarray(apply(variables, jnp.asarray(v))) for v in views(x)], axis=0)
    loss = float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))
    return loss, float(np.mean(probs.argmax(-1) == labels)), probs


def flip_views(x):
    return [x, x[:, :, ::-1]]


def ten_crop_views(x, size):
    """The four corners and the centre of the images and of their mirror images."""
    h, w = x.shape[1:3]
    out = []
    for img in (x, x[:, :, ::-1]):
        cy, cx = round((h - size) / 2), round((w - size) / 2)
        for top, left in ((0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (cy, cx)):
            out.append(img[:, top:top + size, left:left + size])
    return out


def test_tfds_dataset_prepared_here_trains_and_evaluates(runs):
    """The run read the tfds dataset made in this test: its step-2 loss and update are those
    of the batch of our train images, and its evaluation (flip: the mean of the softmax of
    each image and its mirror) is that of our 32 test images and labels."""
    workdir, result = runs["tfds"]
    cfg = tiny_config(**TFDS)
    arrays = tfds_arrays()
    images, labels = arrays["train"]
    order = tfds_record_order(os.path.join(os.path.dirname(workdir), "tfds"), "train")
    images, labels = images[order], labels[order]
    idx = pipeline.BatchOrder(len(images), cfg.batch_size, cfg.seed).indices(1)
    loss, expected, actual, _ = _explicit_step(workdir, cfg, 1, images[idx], labels[idx], 10)
    assert _rows(workdir, "train_loss")[2]["train_loss"] == pytest.approx(loss, rel=1e-5)
    _assert_params_close(actual, expected)
    test_x, test_y = arrays["test"]
    assert result["eval_count"] == len(test_y) == 32
    loss, acc, _ = _explicit_eval(workdir, 2, cfg.model, test_x, test_y, flip_views)
    assert result["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert result["eval_accuracy"] == pytest.approx(acc)


# -------------------------------------------------------------------------------------------
# d) ten-crop and flip evaluation equal an explicit average
# -------------------------------------------------------------------------------------------

def test_ten_crop_eval_is_the_mean_softmax_of_ten_explicit_crops(runs):
    """eval_crops='ten_crop' on 32x32 images: 28x28 crops (87.5%) at the four corners and
    the centre, of the images and their mirror; loss and accuracy of the mean softmax.
    (Flip evaluation is checked the same way by the tfds test above.)"""
    workdir, result = runs["mixed"]
    cfg = tiny_config(**MIXED)
    data = pipeline.load_datasets(cfg.dataset, None, model_cfg(cfg.model)["input_size"])
    x, y = data.eval.images, data.eval.labels
    assert result["eval_count"] == len(y) == 32
    loss, acc, _ = _explicit_eval(workdir, 3, cfg.model, x, y,
                                      lambda v: ten_crop_views(v, 28))
    assert result["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert result["eval_accuracy"] == pytest.approx(acc)
    # the views matter: the centre crop alone gives another loss
    centre, _, _ = _explicit_eval(workdir, 3, cfg.model, x, y,
                                  lambda v: ten_crop_views(v, 28)[4:5])
    assert abs(centre - loss) > 1e-4


# -------------------------------------------------------------------------------------------
# c) an ensemble of two different runs is the mean of their softmaxes
# -------------------------------------------------------------------------------------------

def test_ensemble_of_two_different_runs_is_the_mean_of_their_softmaxes(runs):
    """Two runs with different seeds, data and training: the ensemble's probabilities are
    the mean of the members' softmax outputs (computed here from their checkpoints), which
    differ from each member's; its accuracy is that mean's."""
    (a, _), (b, _) = runs["mixed"], runs["tfds"]
    cfg = tiny_config(**MIXED)
    data = pipeline.load_datasets(cfg.dataset, None, model_cfg(cfg.model)["input_size"])
    x, y = data.eval.images, data.eval.labels
    out = evaluate.ensemble_predictions([a, b], crops="center")
    np.testing.assert_array_equal(out["labels"], y)
    members = [_explicit_eval(w, s, cfg.model, x, y, lambda v: [v])[2]
               for w, s in ((a, 3), (b, 2))]
    for got, want in zip(out["members"], members):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    mean = (members[0] + members[1]) / 2
    np.testing.assert_allclose(out["probs"], mean, rtol=1e-5, atol=1e-7)
    for m in members:
        assert np.max(np.abs(mean - m)) > 1e-3  # different runs: the mean is neither member
    summary = evaluate.ensemble([a, b], crops="center")
    assert summary["ensemble_accuracy"] == pytest.approx(float(np.mean(mean.argmax(-1) == y)))
    assert summary["members"] == [pytest.approx(float(np.mean(m.argmax(-1) == y)))
                                  for m in members]


# -------------------------------------------------------------------------------------------
# f) the multi-host command-line flags, two local processes, a streamed (folder) source
# -------------------------------------------------------------------------------------------

def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_folder(root, n_per_class=12, classes=("a", "b", "c")):
    """An image folder (train/ and validation/, PNG files), read by streaming workers."""
    import PIL.Image
    rng = np.random.default_rng(5)
    for split, n in (("train", n_per_class), ("validation", 4)):
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(n):
                PIL.Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_multihost_command_line_flags_with_a_streamed_source(tmp_path):
    """``python -m jaxvision.train ... --coordinator_address --num_processes 2 --process_id I``
    on two local processes (4 CPU devices each) reading an image folder (streamed, random
    resized crops made from (seed, step) on each host) gives the losses and final parameters
    of the same command run as one process with the same 8 devices."""
    import sys

    _write_folder(tmp_path / "images")
    overrides = {"model": "test_cnn", "dataset.source": "folder",
                 "dataset.path": str(tmp_path / "images"), "dataset.workers": 0,
                 "num_train_steps": 3, "batch_size": 16, "log_every_steps": 1,
                 "checkpoint_every_steps": 3, "eval_every_steps": 3, "warmup_epochs": 0.0,
                 "async_checkpoint": False}
    config_file = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "configs",
                               "mnist_cnn.py")
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]

    # one process, 8 devices: in this test process, through the same config file
    import importlib.util
    spec = importlib.util.spec_from_file_location("mnist_cnn_config", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    single = module.get_config()
    single.update_from_flattened_dict(overrides)
    train.train_and_evaluate(single, str(tmp_path / "single"))

    port = _free_port()
    xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
    env = {**os.environ, "XLA_FLAGS": " ".join([*xla, "--xla_force_host_platform_device_count=4"]),
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(
               os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    codes, outs = run_processes(
        [[sys.executable, "-m", "jaxvision.train", "--config", config_file, "--workdir",
          str(tmp_path / "multi"), *flags, "--coordinator_address", f"127.0.0.1:{port}",
          "--num_processes", "2", "--process_id", str(i)] for i in range(2)],
        logs, env=env, cwd=str(tmp_path))
    assert codes == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert "on 8 device(s) / 2 process(es)" in outs[0], outs[0][-2000:]
    a, b = _rows(tmp_path / "single", "train_loss"), _rows(tmp_path / "multi", "train_loss")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    np.testing.assert_allclose([b[s]["train_loss"] for s in b], [a[s]["train_loss"] for s in a],
                               rtol=1e-5)
    ea, eb = _rows(tmp_path / "single", "eval_loss"), _rows(tmp_path / "multi", "eval_loss")
    assert ea[3]["eval_count"] == eb[3]["eval_count"] == 12
    assert eb[3]["eval_loss"] == pytest.approx(ea[3]["eval_loss"], rel=1e-5)
    pa, _ = ckpt.restore_variables(str(tmp_path / "single"))
    pb, _ = ckpt.restore_variables(str(tmp_path / "multi"))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), pa, pb)
