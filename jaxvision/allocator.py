"""The C allocator of the command-line entry points: tcmalloc where it is installed.

XLA:CPU gives each execution of a compiled program one buffer for all its intermediate values
and frees it when the execution ends.  For a train step that buffer is large (1,276 MB for
the ResNet-18 224x224 batch-32 step), far above the 32 MB up to which glibc's ``malloc``
keeps freed memory for reuse, so every step maps it afresh and the kernel zeroes it page by
page as the step first touches it: 342,000 page faults per step.  tcmalloc keeps the freed
buffer and hands it back the next step (about 500 faults per step after the first): on a
2-core AMD EPYC that step took 2.2 s instead of 3.1 s.  PyTorch's step, whose tensors are
separate allocations, faulted less under glibc and gained less (``docs/results.md``).

The allocator has to be chosen before the process starts (``LD_PRELOAD``), so the
command-line entry points (``jaxvision-train``, ``-evaluate``, ``-benchmark`` and their
``python -m`` forms) call :func:`reexec_with_allocator` first: where tcmalloc is installed and
not yet in use, it replaces the process with the same command under tcmalloc.
``JAXVISION_MALLOC`` chooses: ``auto`` (default) as just said, ``system`` to keep the C
library's ``malloc``, or the path of an allocator library to preload instead.  A program that
imports jaxvision is never re-executed; it can be started with ``LD_PRELOAD`` set itself.
Install tcmalloc with ``apt-get install libtcmalloc-minimal4`` (Debian, Ubuntu) or ``conda
install gperftools``.
"""
from __future__ import annotations

import glob
import os
import sys
import warnings
from collections.abc import Mapping, Sequence

ENV_VAR = "JAXVISION_MALLOC"
# Set in the re-executed process, so that it never re-executes itself again.
MARK_VAR = "JAXVISION_MALLOC_PRELOADED"
CHOICES = ("auto", "system")
# Allocators recognised in a process's memory map, by file-name fragment.
KNOWN = ("tcmalloc", "jemalloc", "mimalloc")
TCMALLOC_FILES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def _library_dirs() -> list[str]:
    dirs = [os.path.join(sys.prefix, "lib")]
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        dirs.append(os.path.join(conda, "lib"))
    dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
             "/usr/lib", "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
             "/lib64"]
    return dirs


def find_tcmalloc(dirs: Sequence[str] | None = None) -> str | None:
    """Path of an installed tcmalloc library (the minimal build first), or None."""
    for d in (_library_dirs() if dirs is None else dirs):
        for name in TCMALLOC_FILES:
            for path in sorted(glob.glob(os.path.join(d, name))):
                if os.path.isfile(path):
                    return path
    return None


def mapped_allocator(maps_path: str = "/proc/self/maps") -> str | None:
    """The known allocator (``'tcmalloc'``, ``'jemalloc'``, ``'mimalloc'``) loaded into this
    process, or None (the C library's ``malloc``, or the map cannot be read)."""
    try:
        with open(maps_path) as f:
            maps = f.read()
    except OSError:
        return None
    for line in maps.splitlines():
        name = os.path.basename(line.rsplit(" ", 1)[-1])
        for known in KNOWN:
            if name.startswith("lib" + known):
                return known
    return None


def allocator_name() -> str:
    """What serves ``malloc`` in this process: a :data:`KNOWN` name, or ``'system'``."""
    return mapped_allocator() or "system"


def _choice(environ: Mapping[str, str]) -> tuple[str, bool]:
    """(``JAXVISION_MALLOC``'s value, whether it names a library rather than a choice)."""
    value = environ.get(ENV_VAR, "").strip() or "auto"
    explicit = value.lower() not in CHOICES
    return (value if explicit else value.lower()), explicit


def _preloaded(environ: Mapping[str, str]) -> list[str]:
    """The libraries ``LD_PRELOAD`` names (separated by spaces or colons, as ld.so reads it)."""
    return environ.get("LD_PRELOAD", "").replace(":", " ").split()


def preload_target(environ: Mapping[str, str] | None = None,
                   platform: str | None = None, maps_path: str = "/proc/self/maps",
                   dirs: Sequence[str] | None = None) -> str | None:
    """The library a command-line run should re-execute itself under, or None to stay as it
    is.  ``environ`` and ``platform`` default to this process's; ``maps_path`` is read by
    :func:`mapped_allocator`, ``dirs`` searched by :func:`find_tcmalloc`.  Raises ValueError
    for a ``JAXVISION_MALLOC`` that is neither a choice nor an existing file."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    choice, explicit = _choice(environ)
    if explicit and not os.path.isfile(choice):
        raise ValueError(
            f"{ENV_VAR}={choice!r}: not one of {', '.join(CHOICES)} and not an existing "
            "file (the path of an allocator library to preload)")
    if choice == "system" or not platform.startswith("linux"):
        return None
    if environ.get(MARK_VAR):
        return None  # already re-executed once; never loop
    if explicit:
        preloaded = map(os.path.abspath, _preloaded(environ))
        return None if os.path.abspath(choice) in preloaded else choice
    if mapped_allocator(maps_path) is not None:
        return None  # the user preloaded an allocator of their own
    return find_tcmalloc(dirs)


def reexec_with_allocator(argv: Sequence[str] | None = None) -> None:
    """Replace this process with the same command under the allocator :func:`preload_target`
    names; return if there is none.  Only for ``__main__``-style entry points: ``argv``
    (default ``sys.orig_argv``) is the full command line, interpreter first.  A bad
    ``JAXVISION_MALLOC`` exits with its message."""
    try:
        target = preload_target()
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if os.environ.get(MARK_VAR) == "auto" and mapped_allocator() is None:
        warnings.warn(f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} did not load "
                      f"tcmalloc; running with the C library's malloc ({ENV_VAR}=system "
                      "avoids the attempt)", RuntimeWarning, stacklevel=2)
    if target is None or not sys.executable:
        return
    argv = list(sys.orig_argv if argv is None else argv)
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join([target, *_preloaded(env)])
    env[MARK_VAR] = "explicit" if _choice(env)[1] else "auto"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
