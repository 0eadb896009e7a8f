"""Test-time crops, weight EMA and ensembles, end to end on a tiny model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import evaluate, sharding, train
from jaxvision.config import default_config
from jaxvision.data.pipeline import load_datasets
from jaxvision.registry import model_cfg
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    dirs = []
    for seed, model in ((0, "test_cnn"), (1, "simple_cnn")):
        d = tmp_path_factory.mktemp(f"run{seed}")
        cfg = tiny_config(model=model, seed=seed, num_train_steps=4, **(
            {"dataset.source": "synthetic", "dataset.train_size": 128}
            if model == "simple_cnn" else {}))
        train.train_and_evaluate(cfg, str(d))
        dirs.append(str(d))
    return dirs


@pytest.mark.parametrize("crops", ["flip", "ten_crop"])
def test_tta_crops_run_from_config(tmp_path, crops):
    # simple_cnn pools globally, so it takes the 28px crops of 32px images
    cfg = tiny_config(model="simple_cnn", num_train_steps=2, eval_crops=crops,
                      **{"dataset.source": "synthetic", "dataset.train_size": 128})
    result = train.train_and_evaluate(cfg, str(tmp_path))
    assert result["eval_count"] == 32 and 0.0 <= result["eval_accuracy"] <= 1.0


def test_flip_tta_averages_softmax_of_both_views():
    model = train.create_model("test_cnn")
    x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    variables = model.init(jax.random.key(1), x)
    mean, std = jnp.zeros(1), jnp.ones(1)
    probs, _ = evaluate.make_predict(model, mean, std, jnp.float32, "flip")(variables, x)
    p1 = jax.nn.softmax(model.apply(variables, x))
    p2 = jax.nn.softmax(model.apply(variables, x[:, :, ::-1]))
    np.testing.assert_allclose(probs, (p1 + p2) / 2, rtol=1e-5, atol=1e-6)


def test_ema_weights_are_used_for_eval(tmp_path):
    cfg = tiny_config(num_train_steps=3, ema_decay=0.5, eval_every_steps=3)
    train.train_and_evaluate(cfg, str(tmp_path))
    config, model, variables = evaluate.load_run(str(tmp_path))
    from jaxvision import checkpoint as ckpt
    directory, step = ckpt.find_restore_path(str(tmp_path))
    mngr = ckpt.ocp.CheckpointManager(directory, item_names=("state", "meta"))
    raw = mngr.restore(step, args=ckpt.ocp.args.Composite(
        state=ckpt.ocp.args.StandardRestore()))["state"]
    mngr.close()
    # after 3 steps with decay 0.5: ema = 0.5^3 p0 + ... differs from the raw weights
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), raw["ema_params"],
                        raw["params"])
    assert max(jax.tree.leaves(diff)) > 0
    jax.tree.map(np.testing.assert_array_equal, variables["params"], raw["ema_params"])
    # --weights trained: the trained weights of the same checkpoint
    _, _, trained = evaluate.load_run(str(tmp_path), ema=False)
    jax.tree.map(np.testing.assert_array_equal, trained["params"], raw["params"])


def test_ensemble_is_the_mean_of_member_softmax(two_runs):
    out = evaluate.ensemble([two_runs[0]])
    assert out["count"] == 1000 and len(out["members"]) == 1
    assert out["ensemble_accuracy"] == pytest.approx(out["members"][0])
    # direct computation for a 2-member ensemble of the same architecture twice
    config, model, variables = evaluate.load_run(two_runs[0])
    data = load_datasets(config.dataset, None, model_cfg(config.model)["input_size"])
    mcfg = model_cfg(config.model)
    predict = evaluate.make_predict(model, jnp.asarray(mcfg["mean"]), jnp.asarray(mcfg["std"]),
                                    jnp.float32)
    probs = evaluate.predict_split(predict, variables, data.eval, 32, sharding.make_mesh())
    assert probs.shape == (1000, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    acc = float(np.mean(np.argmax(probs, -1) == data.eval.labels))
    assert evaluate.ensemble([two_runs[0], two_runs[0]])["ensemble_accuracy"] == pytest.approx(acc)


def test_ensemble_across_architectures_needs_same_classes(two_runs):
    # test_cnn (1 channel) and simple_cnn (3 channels) cannot share an eval split
    with pytest.raises(Exception, match="channel"):
        evaluate.ensemble(two_runs)


def test_ten_crop_on_a_size_dependent_model_fails_before_compiling():
    """mnist_cnn flattens its feature map into dense layers: 28x28 only.  The check runs on
    shapes alone (abstract variables, nothing compiled) and names both sizes."""
    import jax.numpy as jnp
    import numpy as np

    import jaxvision
    from jaxvision import evaluate
    from jaxvision.data.sources import Split
    from jaxvision.utils import variable_shapes
    model = jaxvision.create_model("mnist_cnn")
    variables = variable_shapes(model, (28, 28, 1))
    split = Split(np.zeros(2, np.int32), 10, "validation",
                  images=np.zeros((2, 28, 28, 1), np.uint8))
    mean, std = jnp.asarray([0.1307]), jnp.asarray([0.3081])
    predict = evaluate.make_predict(model, mean, std, jnp.float32, "ten_crop")
    with pytest.raises(ValueError, match=r"mnist_cnn cannot take eval_crops='ten_crop': its "
                                         r"views are 24x24 but the model takes 28x28"):
        evaluate.check_views_fit(predict, variables, split, "mnist_cnn", "ten_crop")
    ok = evaluate.make_predict(model, mean, std, jnp.float32, "flip")
    evaluate.check_views_fit(ok, variables, split, "mnist_cnn", "flip")


def test_evaluate_a_run_on_another_split(two_runs):
    """``python -m jaxvision.evaluate --workdir W --config.dataset.eval_split=train_full``:
    the run's saved dataset config with the given keys changed."""
    argv = ["evaluate", "--workdir", two_runs[0], "--config.dataset.eval_split=train_full"]
    keys = evaluate.dataset_overrides(argv)
    assert keys == ["eval_split"]
    parsed = default_config()
    parsed.dataset.eval_split = "train_full"  # what the --config flag parses
    saved = evaluate.run_config(two_runs[0]).dataset
    ds = evaluate.with_dataset(saved, keys, parsed.dataset)
    assert ds.eval_split == "train_full" and saved.eval_split == "validation"
    assert ds.train_size == saved.train_size == 256  # the other keys are the run's
    out = evaluate.ensemble([two_runs[0]], dataset=ds)
    assert out["count"] == 5000  # all bundled digits, not the 1,000 held out
    with pytest.raises(ValueError, match=r"--config.model: evaluation can change only "
                                         r"config.dataset keys"):
        evaluate.dataset_overrides(["evaluate", "--config.model=test_cnn"])


def test_asking_for_the_average_of_a_run_that_kept_none_is_an_error(two_runs):
    with pytest.raises(ValueError, match="kept no moving average of its weights"):
        evaluate.load_run(two_runs[0], ema=True)
