"""Every console script's --help lists its flags, also when run as an installed script
(absl lists the flags of the module it takes sys.argv[0] for: here the script)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module,flags", [("train", ["--config", "--workdir"]),
                                          ("evaluate", ["--workdirs", "--eval_crops"])])
def test_absl_script_help_lists_flags(tmp_path, module, flags):
    script = tmp_path / f"jaxvision-{module}"
    script.write_text(f"import sys\nfrom jaxvision.{module} import cli\nsys.exit(cli())\n")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True,
                         text=True, timeout=120)
    for flag in flags:
        assert flag in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("module,flags", [("predict", ["--workdir", "--model", "--top_k",
                                                       "--json"]),
                                          ("plot", ["--out"])])
def test_argparse_script_help_lists_flags(module, flags, capsys):
    import importlib
    mod = importlib.import_module(f"jaxvision.{module}")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out
