"""Experiment configs by name: ``--config mnist_cnn`` as well as ``--config path/to/x.py``.

The configs live once, in ``experiments/configs/``; ``setup.py`` installs that folder as
``jaxvision/configs/`` so that a name resolves after any install (editable or not), and to the
repository's folder when jaxvision is imported from a source checkout.  A value that names an
existing file, or ends in ``.py``, or holds a path separator, is a path and passes unchanged.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def config_dir() -> str | None:
    """The folder holding the experiment configs, or None when none is reachable."""
    try:
        spec = importlib.util.find_spec("jaxvision.configs")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations))
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.join(os.path.dirname(here), "experiments", "configs")  # a source checkout
    return repo if os.path.isdir(repo) else None


def available() -> list[str]:
    """The names ``--config`` accepts (the config files' names without ``.py``)."""
    d = config_dir()
    if d is None:
        return []
    return sorted(f[:-3] for f in os.listdir(d) if f.endswith(".py") and not f.startswith("_"))


def resolve(value: str) -> str:
    """``value`` with a bare config name (``NAME`` or ``NAME:arg``) replaced by its file's
    path (``/.../NAME.py`` or ``/.../NAME.py:arg``); a path is returned unchanged.  An unknown
    name raises ``ValueError`` listing the available ones."""
    name, sep, arg = value.partition(":")
    if (os.path.exists(name) or name.endswith(".py") or os.sep in name
            or (os.altsep and os.altsep in name)):
        return value
    names = available()
    if name not in names:
        raise ValueError(f"unknown config {name!r}: give a config file's path or one of "
                         f"{', '.join(names) or '(no configs are installed)'}")
    return os.path.join(config_dir(), name + ".py") + sep + arg


def resolve_argv(argv: list[str], flag: str = "config") -> list[str]:
    """``argv`` with the value of ``--config`` (``--config=V`` or ``--config V``) resolved."""
    out, i = list(argv), 1
    while i < len(out):
        a = out[i]
        if a == "--":
            break
        for dashes in ("--", "-"):
            if a.startswith(f"{dashes}{flag}="):
                out[i] = f"{dashes}{flag}=" + resolve(a.split("=", 1)[1])
            elif a == f"{dashes}{flag}" and i + 1 < len(out):
                out[i + 1] = resolve(out[i + 1])
                i += 1
        i += 1
    return out


def resolve_command_line(argv: list[str] | None, flag: str = "config") -> list[str]:
    """``resolve_argv`` of ``argv`` (``sys.argv`` when None); an unknown name is printed as
    one ``Error:`` line and exits with status 1, as the entry points report bad input."""
    try:
        return resolve_argv(sys.argv if argv is None else argv, flag)
    except ValueError as e:
        print(f"Error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


__all__ = ["available", "config_dir", "resolve", "resolve_argv", "resolve_command_line"]
