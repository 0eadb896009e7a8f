"""No code path in the package deserialises untrusted bytes into Python objects.

Loading a pickle (directly, through ``torch.load`` without ``weights_only=True`` or
``np.load(allow_pickle=True)``) runs whatever code the file names, and a tar archive
unpacked without ``filter='data'`` can write outside its target folder or create device
files.  Checkpoints, datasets and converted weights all arrive from elsewhere, so the
package must not do either.

The scanner reads the syntax tree rather than the text: a call spread over several lines
is judged as one call, imports under another name (``import pickle as pk``, ``from pickle
import loads``) are followed, and mentions in comments, strings and docstrings are not
calls.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxvision"

# Functions that unpickle whatever they are given.
PICKLE_LOADERS = {f"{mod}.{fn}" for mod in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
                  for fn in ("load", "loads", "Unpickler")} | {"pandas.read_pickle", "joblib.load"}


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:  # `import a.b` binds `a`
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.load`` -> ``numpy.load`` (through the imports); None for anything not a name."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _keyword(call: ast.Call, name: str):
    """(present, literal value or a marker for a non-literal) of keyword ``name``; a
    ``**kwargs`` expansion counts as present with an unknown value."""
    unknown = object()
    for kw in call.keywords:
        if kw.arg == name:
            return True, (kw.value.value if isinstance(kw.value, ast.Constant) else unknown)
        if kw.arg is None:
            return True, unknown
    return False, None


def scan_source(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, problem) for every unsafe deserialisation in one Python source text."""
    tree = ast.parse(source, filename)
    aliases = _import_aliases(tree)
    uses_tarfile = any(v == "tarfile" or v.startswith("tarfile.") for v in aliases.values())
    found = []
    called = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called.add(id(node.func))
        name = _dotted(node.func, aliases)
        if name in PICKLE_LOADERS:
            found.append((node.lineno, f"{name}() unpickles its input"))
        elif name == "torch.load":
            present, value = _keyword(node, "weights_only")
            if not (present and value is True):
                found.append((node.lineno, "torch.load() without weights_only=True"))
        elif name == "numpy.load":
            present, value = _keyword(node, "allow_pickle")
            if present and value is not False:
                found.append((node.lineno, "numpy.load() with allow_pickle other than False"))
        elif name == "shutil.unpack_archive" or (
                isinstance(node.func, ast.Attribute) and node.func.attr == "extractall"
                and (uses_tarfile or (name or "").startswith("tarfile."))):
            present, value = _keyword(node, "filter")
            if not (present and value == "data"):
                what = name if name == "shutil.unpack_archive" else "tarfile extractall"
                found.append((node.lineno, f"{what}() without filter='data'"))
    # a loader passed around as a value (e.g. `loader = pickle.loads`) is just as unsafe
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in called:
            if isinstance(node, ast.Name) and node.id not in aliases:
                continue
            name = _dotted(node, aliases)
            if name in PICKLE_LOADERS and isinstance(node.ctx, ast.Load):
                found.append((node.lineno, f"{name} referenced (it unpickles its input)"))
    return sorted(found)


def scan_tree(root: Path) -> list[str]:
    """``path:line: problem`` for every .py file under ``root``."""
    report = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root.parent)
            try:
                problems = scan_source(path.read_text(encoding="utf-8"), str(path))
            except SyntaxError as e:
                report.append(f"{rel}:{e.lineno}: cannot be parsed, so cannot be checked ({e.msg})")
                continue
            report.extend(f"{rel}:{line}: {what}" for line, what in problems)
    return report


# ---------------------------------------------------------------------------------------
# The package itself
# ---------------------------------------------------------------------------------------

def test_package_has_no_unsafe_deserialisation():
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 10 and PACKAGE / "data" / "folder.py" in files  # the walk is real
    report = scan_tree(PACKAGE)
    assert not report, "unsafe deserialisation in the package:\n" + "\n".join(report)


# ---------------------------------------------------------------------------------------
# The scanner
# ---------------------------------------------------------------------------------------

BAD = {
    "pickle_load": "import pickle\nwith open(p, 'rb') as f:\n    obj = pickle.load(f)\n",
    "pickle_loads": "import pickle\nobj = pickle.loads(data)\n",
    "pickle_alias": "import pickle as pk\nobj = pk.loads(data)\n",
    "pickle_from_import": "from pickle import loads\nobj = loads(data)\n",
    "pickle_unpickler": "import pickle\nobj = pickle.Unpickler(f).load()\n",
    "pickle_passed_around": "import pickle\nreader = pickle.load\n",
    "torch_load_plain": "import torch\nsd = torch.load(path)\n",
    "torch_load_false": "import torch\nsd = torch.load(path, weights_only=False)\n",
    "torch_load_multiline": "import torch\nsd = torch.load(\n    path,\n    map_location='cpu',\n)\n",
    "torch_load_variable": "import torch\nsd = torch.load(path, weights_only=flag)\n",
    "torch_load_kwargs": "import torch\nsd = torch.load(path, **opts)\n",
    "np_allow_pickle": "import numpy as np\na = np.load(path, allow_pickle=True)\n",
    "numpy_allow_pickle_multiline": "import numpy\na = numpy.load(\n    path,\n    allow_pickle=True)\n",
    "np_from_import": "from numpy import load\na = load(path, allow_pickle=True)\n",
    "tar_extractall": "import tarfile\ntarfile.open(p).extractall(d)\n",
    "tar_extractall_trusting": ("import tarfile\nwith tarfile.open(p) as t:\n"
                                "    t.extractall(d, filter='fully_trusted')\n"),
    "tar_from_import": "from tarfile import open as topen\nwith topen(p) as t:\n    t.extractall(d)\n",
    "unpack_archive": "import shutil\nshutil.unpack_archive(p, d)\n",
}

GOOD = {
    "torch_weights_only": "import torch\nsd = torch.load(path, weights_only=True)\n",
    "torch_multiline_weights_only": ("import torch\nsd = torch.load(\n    path,\n"
                                     "    map_location='cpu',\n    weights_only=True,\n)\n"),
    "np_load_default": "import numpy as np\na = np.load(path)\n",
    "np_load_false": "import numpy as np\na = np.load(path, allow_pickle=False)\n",
    "tar_filter_data_single": ("import tarfile\nwith tarfile.open(p) as t:\n"
                               "    t.extractall(d, filter='data')\n"),
    "tar_filter_data_double": 'import tarfile\ntarfile.open(p).extractall(d, filter="data")\n',
    "unpack_archive_data": "import shutil\nshutil.unpack_archive(p, d, filter='data')\n",
    "zip_extractall": "import zipfile\nzipfile.ZipFile(p).extractall(d)\n",
    "comment_and_strings": ("# pickle.load(f) and torch.load(p) are unsafe\n"
                            "doc = 'never np.load(p, allow_pickle=True)'\n"
                            "def f():\n    '''tar.extractall(d) without a filter'''\n"),
    "other_loads": "import json\nobj = json.load(f)\nx = self.load(p)\ny = model.loads(s)\n",
    "local_name_load": "def load(p):\n    return p\nload(1)\n",
    "safetensors": "from safetensors.numpy import load_file\nsd = load_file(p)\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_scanner_flags_unsafe_calls(name):
    found = scan_source(BAD[name])
    assert len(found) == 1, found
    line, _ = found[0]
    # reported where the call (or reference) starts
    lines = BAD[name].splitlines()
    assert any(k in lines[line - 1] for k in ("load", "Unpickler", "extractall", "unpack"))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_scanner_passes_safe_calls(name):
    assert scan_source(GOOD[name]) == []


def test_scan_tree_reports_file_and_line(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "ok.py").write_text(GOOD["torch_weights_only"])
    (pkg / "sub" / "bad.py").write_text("import torch\n\n\nsd = torch.load(p)\n"
                                        "import pickle\nx = pickle.loads(b)\n")
    (pkg / "notes.txt").write_text("pickle.load(f)\n")  # not Python: not scanned
    (pkg / "broken.py").write_text("def f(:\n")
    report = scan_tree(pkg)
    assert report[0].startswith(os.path.join("pkg", "broken.py") + ":1: cannot be parsed")
    assert report[1:] == [os.path.join("pkg", "sub", "bad.py") + ":4: torch.load() without "
                          "weights_only=True",
                          os.path.join("pkg", "sub", "bad.py") + ":6: pickle.loads() unpickles "
                          "its input"]
