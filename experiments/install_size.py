"""The default install, measured: a fresh venv, a non-editable ``pip install`` of this
repository, the default job run from it, and the size of what was installed.

    python experiments/install_size.py [--venv /tmp/jaxvision-install-venv] [--out experiments/results/install_size.json]

Writes date, CPU, Python and pip versions, the venv's site-packages size (MB, ``du``-style
block sizes), each installed distribution's size (MB, from its RECORD), and the training
command with its exit status, wall time and last lines.  Needs network access to PyPI.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "experiments", "results", "install_size.json")
COMMAND = ["-m", "jaxvision.train", "--config", "mnist_cnn", "--workdir"]

# Run inside the venv: {distribution: bytes of its installed files}, from each RECORD.
SIZES = r"""
import json, os, importlib.metadata as md
out = {}
for d in md.distributions():
    total = 0
    for f in d.files or ():
        p = d.locate_file(f)
        if os.path.isfile(p) and not os.path.islink(p):
            total += os.path.getsize(p)
    out[d.metadata["Name"]] = out.get(d.metadata["Name"], 0) + total
print(json.dumps(out))
"""
VERSIONS = ("import json, importlib.metadata as md; "
            "print(json.dumps({d.metadata['Name']: d.version for d in md.distributions()}))")


def _du_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_blocks * 512
    return round(total / 2**20, 1)


def _cpu() -> str:
    try:
        from jaxvision.backends.cpu.platform import cpuinfo_field
        return cpuinfo_field("model name") or platform.processor()
    except Exception:  # noqa: BLE001 -- a label only
        return platform.processor()


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/jaxvision-install-venv")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)

    shutil.rmtree(args.venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", args.venv], check=True)
    py = os.path.join(args.venv, "bin", "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    t0 = time.time()
    r = _run([py, "-m", "pip", "install", REPO], env=env)  # non-editable
    install_s = time.time() - t0
    if r.returncode:
        sys.exit(f"pip install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    pip_version = _run([py, "-m", "pip", "--version"], env=env).stdout.split()[1]
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=env).stdout.strip()
    sizes = json.loads(_run([py, "-c", SIZES], env=env).stdout)
    per_pkg = {k: round(v / 2**20, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}
    versions = json.loads(_run([py, "-c", VERSIONS], env=env).stdout)

    # the default job, from a folder outside the repository so that only the install is used
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, "mnist_cnn")
        cmd = [py, *COMMAND, workdir]
        t0 = time.time()
        run = _run(cmd, env=env, cwd=tmp)
        train_s = time.time() - t0
        where = _run([py, "-c", "import jaxvision; print(jaxvision.__file__)"], env=env,
                     cwd=tmp).stdout.strip()
    tail = (run.stdout + run.stderr).strip().splitlines()[-4:]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu(),
        "python": platform.python_version(),
        "pip": pip_version,
        "jaxvision_commit": _run(["git", "-C", REPO, "rev-parse", "HEAD"]).stdout.strip(),
        "install_command": "python -m venv VENV && VENV/bin/python -m pip install CHECKOUT",
        "install_s": round(install_s, 1),
        "site_packages_mb": _du_mb(site),
        "venv_mb": _du_mb(args.venv),
        "top10_mb": dict(list(per_pkg.items())[:10]),
        "packages_mb": per_pkg,
        "versions": versions,
        "jaxvision_imported_from": where,
        "command": "python " + " ".join(COMMAND) + " WORKDIR",
        "rc": run.returncode,
        "train_s": round(train_s, 1),
        "output_tail": tail,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("site_packages_mb", "venv_mb", "top10_mb", "rc",
                                              "train_s", "output_tail")}, indent=1))
    if run.returncode:
        sys.exit(f"the default job failed (rc {run.returncode})")


if __name__ == "__main__":
    main()
