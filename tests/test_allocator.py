"""The command-line entry points' choice of C allocator (jaxvision/allocator.py)."""
import os
import subprocess
import sys

import pytest

from jaxvision import allocator
from jaxvision.allocator import ENV_VAR, MARK_VAR, preload_target

LINUX = {"LD_PRELOAD": ""}


def _libs(tmp_path, *names):
    d = tmp_path / "lib"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"\x7fELF")
    return [str(d)]


def _maps(tmp_path, *libs):
    p = tmp_path / ("maps_" + "_".join(libs))
    p.write_text("".join(f"7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/{lib}\n" for lib in libs)
                 + "7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n")
    return str(p)


def test_find_tcmalloc_prefers_the_minimal_build(tmp_path):
    assert allocator.find_tcmalloc(_libs(tmp_path)) is None
    dirs = _libs(tmp_path, "libtcmalloc.so.4")
    assert allocator.find_tcmalloc(dirs) == os.path.join(dirs[0], "libtcmalloc.so.4")
    _libs(tmp_path, "libtcmalloc_minimal.so.4")
    assert allocator.find_tcmalloc(dirs) == os.path.join(dirs[0], "libtcmalloc_minimal.so.4")


def test_mapped_allocator_reads_the_memory_map(tmp_path):
    assert allocator.mapped_allocator(_maps(tmp_path, "libc.so.6")) is None
    assert allocator.mapped_allocator(
        _maps(tmp_path, "libc.so.6", "libtcmalloc_minimal.so.4.5.10")) == "tcmalloc"
    assert allocator.mapped_allocator(_maps(tmp_path, "libjemalloc.so.2")) == "jemalloc"
    assert allocator.mapped_allocator(str(tmp_path / "missing")) is None
    assert allocator.allocator_name() in (*allocator.KNOWN, "system")


def test_preload_target_decisions(tmp_path):
    dirs = _libs(tmp_path, "libtcmalloc_minimal.so.4")
    tc = os.path.join(dirs[0], "libtcmalloc_minimal.so.4")
    plain = _maps(tmp_path, "libc.so.6")

    def target(env, platform="linux", maps=plain, d=dirs):
        return preload_target(env, platform=platform, maps_path=maps, dirs=d)

    assert target(LINUX) == tc  # auto is the default
    assert target({ENV_VAR: " AUTO "}) == tc
    assert target({ENV_VAR: "system"}) is None
    assert target(LINUX, platform="darwin") is None
    assert target({MARK_VAR: "auto"}) is None  # re-executed once already: never loop
    assert target(LINUX, d=[str(tmp_path / "nowhere")]) is None  # not installed
    # The user preloaded an allocator of their own.
    assert target(LINUX, maps=_maps(tmp_path, "libjemalloc.so.2")) is None
    # An explicit library is preloaded unless LD_PRELOAD already has it.
    lib = tmp_path / "libmine.so"
    lib.write_bytes(b"\x7fELF")
    assert target({ENV_VAR: str(lib)}, d=[]) == str(lib)
    assert target({ENV_VAR: str(lib), "LD_PRELOAD": f"/a.so:{lib}"}) is None
    with pytest.raises(ValueError, match="JAXVISION_MALLOC='tcmaloc': not one of auto, system"):
        target({ENV_VAR: "tcmaloc"})


def _libc_path() -> str:
    """A library already in every Python process, harmless to preload again."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libc.so"):
                return path
    pytest.skip("no libc.so in this process's map")


SCRIPT = """
import os, sys
print("started", flush=True)
from jaxvision.allocator import reexec_with_allocator, allocator_name
reexec_with_allocator()
print(os.environ.get("LD_PRELOAD", ""), os.environ.get("JAXVISION_MALLOC_PRELOADED", "-"),
      allocator_name(), sys.argv[1:])
"""


def _run(env_extra, *args):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, MARK_VAR, "LD_PRELOAD")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_reexec_runs_the_same_command_once_under_the_library():
    libc = _libc_path()
    proc = _run({ENV_VAR: libc}, "--flag", "a b")
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["started", "started"]  # the process ran its command twice
    preload, mark, _, argv = lines[2].split(" ", 3)
    assert (preload, mark, argv) == (libc, "explicit", "['--flag', 'a b']")
    proc = _run({ENV_VAR: "system"})
    assert proc.stdout.splitlines()[0] == "started" and proc.stdout.count("started") == 1
    bad = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env={**os.environ, ENV_VAR: "no/such/lib.so"}, timeout=120)
    assert bad.returncode != 0 and "JAXVISION_MALLOC='no/such/lib.so'" in bad.stderr


@pytest.mark.skipif(allocator.find_tcmalloc() is None,
                    reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
def test_auto_reexecutes_under_tcmalloc():
    proc = _run({})
    assert proc.stdout.count("started") == 2
    preload, mark, name, _ = proc.stdout.splitlines()[2].split(" ", 3)
    assert (preload, mark, name) == (allocator.find_tcmalloc(), "auto", "tcmalloc")
