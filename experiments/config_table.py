"""The table of experiment configs in ``experiments/README.md``, built from their docstrings.

    python experiments/config_table.py            # rewrites the block in experiments/README.md

Each config's docstring states its first line (what it reproduces), the command, the hardware
it assumes and the paper's figure, then the same for each variant its argument selects (one
row each); the figures this code has reached come from the results files where
``FROM_RESULTS`` names one, else from ``REACHED`` (each measured by the command in the
docstring; details and wall times in docs/results.md).
"""
from __future__ import annotations

import ast
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(HERE, "configs")
README = os.path.join(HERE, "README.md")

# Figures reached by this code (2-core CPU, held-out splits of the training data; the
# official test sets are not used).
REACHED = {
    "mnist_cnn": "97.8-98.6% held-out accuracy on the 1,000 bundled digits (8 epochs)",
    "mnist_cnn:idx": "full MNIST, 4 epochs: 0.56% held-out error, 0.68% without augmentation",
    "mcdnn_mnist": "6-epoch columns 1.42% / 1.71% / 1.50% held-out error; committee of the "
                   "three 1.12%",
    "mcdnn_mnist:1": "1.71% held-out error after 6 epochs",
    "stn_mnist": "1.02% held-out error on RTS-distorted digits after 8 epochs",
    "odenet_mnist": "1.07% held-out error after 2 epochs (cosine schedule)",
    "capsnet_mnist": "1.50% held-out error after 1 epoch",
}


# Configs whose figures the results files hold: (results file, row, text).  Read, not typed.
FROM_RESULTS = {
    "mnist_cnn:fast": ("mnist_record_cpu.json", ("recipe",),
                       ("{0[mean_error]:.2%} mean held-out error over {0[n]} seeds, "
                        "{0[mean_wall_s]:.0f} s per run ({0[where]}; docs/mnist_record.md)")),
    "dropout_mlp_mnist": ("mnist_record_cpu.json", ("dropout_mlp",),
                          ("{0[mean_error]:.2%} held-out error in {0[mean_wall_s]:.0f} s "
                           "({0[where]}; docs/mnist_record.md)")),
}


def reached(name: str) -> str:
    """The figure this code reached for config ``name``: from its results file where
    :data:`FROM_RESULTS` names one (and every row it needs is there), else :data:`REACHED`."""
    if name in FROM_RESULTS:
        import json
        file, names, text = FROM_RESULTS[name]
        with open(os.path.join(HERE, "results", file)) as f:
            results = json.load(f)
        rows = [results["rows"].get(n) for n in names]
        if all(rows):
            env = [r.get("environment", results["environment"]) for r in rows]
            return text.format(*[dict(r, n=len(r["runs"]), where=(
                e["device"].removeprefix("cpu (").split(",")[0].replace("(R)", "") + ", " + e["date"][:10]))
                for r, e in zip(rows, env)])
    return REACHED.get(name, "not run here")


COMMAND = "python -m jaxvision.train"
FIELDS = {"hardware": "Hardware assumed:", "paper": "Paper's figure:"}


def describe(path: str) -> list[dict]:
    """One entry per training command in a config's docstring: the config's own run first,
    then each variant (``--config experiments/configs/<name>.py:<arg>``).

    A variant's title is the paragraph just above its command; its hardware and paper's
    figure are the lines between its command and the next variant's paragraph, or the
    config's first such lines where it states none of its own."""
    with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    lines = [ln.strip() for ln in doc.splitlines()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith(COMMAND)]

    def paragraph_start(i):  # first line of the paragraph that ends just above line i
        j = i - 1
        while j > 0 and not lines[j]:
            j -= 1
        while j > 0 and lines[j - 1]:
            j -= 1
        return j

    def field(prefix, lo, hi):
        return next((ln[len(prefix):].strip() for ln in lines[lo:hi] if ln.startswith(prefix)),
                    "")

    entries = []
    for k, i in enumerate(starts):
        hi = paragraph_start(starts[k + 1]) if k + 1 < len(starts) else len(lines)
        command = re.sub(r"\s+", " ", lines[i])
        m = re.search(r"--config \S*?(\w+)\.py(?::(\S+))?", command)
        arg = m.group(2) if m else None
        title = lines[0] if k == 0 else " ".join(
            lines[paragraph_start(i):i]).strip().rstrip(":")
        entry = {"name": os.path.basename(path)[:-3] + (f":{arg}" if arg else ""), "arg": arg,
                 "title": title, "command": command}
        for key, prefix in FIELDS.items():
            entry[key] = field(prefix, i + 1, hi) or field(prefix, 0, len(lines))
        entries.append(entry)
    return entries


def table() -> str:
    rows = ["| config | reproduces | paper's figure | reached here | hardware assumed | command |",
            "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
        for d in describe(path):
            cells = [f"`{d['name']}`", d["title"], d["paper"] or "-", reached(d["name"]),
                     d["hardware"] or "1 CPU", f"`{d['command']}`"]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main():
    with open(README) as f:
        text = f.read()
    new, n = re.subn(r"<!-- config-table -->.*?<!-- /config-table -->",
                     lambda _: "<!-- config-table -->\n" + table() + "<!-- /config-table -->",
                     text, flags=re.DOTALL)
    if n != 1:
        sys.exit(f"{README} has no <!-- config-table --> block")
    with open(README, "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
