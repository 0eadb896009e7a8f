"""Fine-tuning: config.pretrained / config.init_from take params and batch statistics only
(never optimizer state), replace the head when the class count differs, and config.freeze
keeps matching parameters fixed.  Pretrained weights come from an offline hub cache holding
timm's test_convnext with random weights."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxvision import checkpoint as ckpt
from jaxvision import finetune, optim, train
from tests.helpers import read_metrics, run_driver, tiny_config


@pytest.mark.torch
def test_finetune_pretrained_from_the_hub_then_resume(tmp_path):
    pytest.importorskip("torch")
    from tests.hub_cache import add_to_hub, fast_timm
    hub = tmp_path / "hub"
    add_to_hub(hub, "timm/test_convnext.r160_in1k", fast_timm("test_convnext"))
    with pytest.MonkeyPatch.context() as mp:  # the driver inherits the environment
        mp.setenv("HF_HUB_CACHE", str(hub))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("JAXVISION_CACHE", str(tmp_path / "jv"))
        from jaxvision import pretrained
        source, classes, _ = pretrained.converted("test_convnext", str(
            next(hub.glob("models--*/snapshots/*/model.safetensors"))))
        assert classes == 1000
        cfg = {"model": "test_convnext", "num_classes": 10, "dataset.source": "synthetic",
               "dataset.train_size": 32, "dataset.image_size": [32, 32], "batch_size": 8,
               "num_train_steps": 2, "checkpoint_every_steps": 2, "eval_every_steps": 2,
               "log_every_steps": 1, "optimizer": "adam", "learning_rate": 1e-3,
               "pretrained": "default", "freeze": "stem*,stages*", "async_checkpoint": False,
               # what is tested is the initialisation, freezing and resume: XLA's own
               # convolutions (the CPU plan's depthwise forms more than double the compile),
               # and a constant rate, so that the resumed run's step is the first run's
               # program, read from the compilation cache
               "kernels.conv": "lax", "schedule": "constant"}
        run = tmp_path / "ft"
        out = run_driver(run, cfg).stdout
        assert "Initialised from pretrained default" in out
        assert "newly initialised" in out and "head_fc/kernel" in out
        variables, _ = ckpt.restore_variables(str(run))
        flat = traverse_util.flatten_dict(variables)
        assert flat[("params", "head_fc", "kernel")].shape[-1] == 10
        backbone = [k for k in flat if k[1].startswith(("stem", "stages"))]
        assert len(backbone) > 20
        for k in backbone:  # frozen: exactly the pretrained weights, after training too
            np.testing.assert_array_equal(flat[k], source[k], err_msg="/".join(k))
        # not frozen: the head's norm moved away from the pretrained weights
        assert not np.array_equal(flat[("params", "head_norm", "scale")],
                                  source[("params", "head_norm", "scale")])
        # the same command with more steps resumes the run
        out = run_driver(run, dict(cfg, num_train_steps=4)).stdout
        assert "Resumed from" in out and "Initialised from" not in out
        assert [r["step"] for r in read_metrics(run) if "train_loss" in r] == [1, 2, 3, 4]


def test_init_from_another_optimizer_and_class_count(tmp_path, capsys):
    """The issue's case: a run trained with SGD starts one with Adam (no optimizer state is
    read) and 12 classes instead of 10 (the head is new, the rest copied)."""
    src = tmp_path / "sgd"
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(src))
    capsys.readouterr()
    train.train_and_evaluate(tiny_config(init_from=str(src), optimizer="adam", num_classes=12,
                                         num_train_steps=1, learning_rate=0.0), str(tmp_path / "b"))
    out = capsys.readouterr().out
    assert f"Initialised from init_from {src}; newly initialised" in out
    a, _ = ckpt.restore_variables(str(src))
    b, _ = ckpt.restore_variables(str(tmp_path / "b"))
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    changed = sorted("/".join(k) for k in fb if fb[k].shape != fa[k].shape)
    assert changed and all(k.startswith("params/") for k in changed) and len(changed) <= 2
    for k in fb:  # learning rate 0: what was copied is still what the source had
        if fb[k].shape == fa[k].shape and k[0] == "params":
            np.testing.assert_array_equal(fb[k], fa[k])


def test_bad_freeze_and_sources(tmp_path):
    params = {"stem": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
    with pytest.raises(ValueError, match="freeze='nothing\\*' matches no parameter"):
        optim.make_optimizer(tiny_config(freeze="nothing*"), params, 10, 10, 8)
    with pytest.raises(ValueError, match="matches every parameter"):
        optim.make_optimizer(tiny_config(freeze="*"), params, 10, 10, 8)
    tx, _ = optim.make_optimizer(tiny_config(freeze="stem*", weight_decay=0.1), params, 10,
                                 10, 8)
    grads = {"stem": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
    upd, _ = tx.update(grads, tx.init(params), params)
    assert float(jnp.abs(upd["stem"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(upd["head"]["kernel"]).min()) > 0.0
    with pytest.raises(ValueError, match="not both"):
        finetune.source_variables(tiny_config(pretrained="default", init_from=str(tmp_path)))
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        finetune.source_variables(tiny_config(init_from=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="no pretrained weights are known for 'test_cnn'"):
        finetune.source_variables(tiny_config(pretrained="default"))
