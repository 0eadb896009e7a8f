"""What a non-editable install relies on: configs by name, extras named when missing."""
import os
import sys

import pytest

from jaxvision import experiment_configs
from jaxvision.utils import MissingExtra, require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "experiments", "configs")


def test_config_names_resolve_to_the_one_copy_of_the_files():
    assert os.path.samefile(experiment_configs.config_dir(), CONFIGS)
    names = experiment_configs.available()
    assert "mnist_cnn" in names and "finetune_folder" in names
    assert names == sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py"))
    path = experiment_configs.resolve("mnist_cnn")
    assert os.path.samefile(path, os.path.join(CONFIGS, "mnist_cnn.py"))
    assert experiment_configs.resolve("mnist_cnn:idx") == path + ":idx"
    # paths pass unchanged, with or without their argument
    for value in ("experiments/configs/mnist_cnn.py", "experiments/configs/mnist_cnn.py:idx",
                  "my_config.py", "./x/y"):
        assert experiment_configs.resolve(value) == value


def test_unknown_config_name_lists_the_available_ones(capsys):
    with pytest.raises(ValueError, match=r"unknown config 'mnist'.*mnist_cnn.*stn_mnist"):
        experiment_configs.resolve("mnist")
    with pytest.raises(SystemExit) as e:
        experiment_configs.resolve_command_line(["train", "--config=mnist:idx", "--workdir=w"])
    assert e.value.code == 1
    assert "Error: ValueError: unknown config 'mnist'" in capsys.readouterr().err


def test_command_line_forms():
    path = experiment_configs.resolve("mnist_cnn")
    argv = ["train", "--config", "mnist_cnn", "--workdir", "w", "--config.batch_size=8"]
    assert experiment_configs.resolve_argv(argv) == [
        "train", "--config", path, "--workdir", "w", "--config.batch_size=8"]
    assert experiment_configs.resolve_argv(["train", "--config=mnist_cnn:idx"]) == [
        "train", f"--config={path}:idx"]
    # --config.<key> overrides and arguments after "--" are left alone
    argv = ["train", "--config.model=mnist_cnn", "--", "--config", "mnist"]
    assert experiment_configs.resolve_argv(argv) == argv


def test_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(MissingExtra, match=r"downloading 'timm/x' .*huggingface_hub.*"
                                           r"pip install 'jaxvision\[pretrained\]'"):
        from jaxvision import pretrained
        pretrained.fetch("timm/x")
    assert require("json", "x", "y") is sys.modules["json"]
