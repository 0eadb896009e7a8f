"""The table of experiment configs in ``experiments/README.md``, built from their docstrings.

    python experiments/config_table.py            # rewrites the block in experiments/README.md

Each config's docstring states its first line (what it reproduces), the command, the hardware
it assumes and the paper's figure; ``REACHED`` below holds the figures this code has reached
where a config was run (each measured by the command in the docstring; details and wall times
in docs/results.md).
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
    "mnist_cnn": "97.8-98.6% held-out accuracy on the 1,000 bundled digits (8 epochs); full MNIST "
                 "(`:idx`, 4 epochs): 0.56% held-out error, 0.68% without augmentation",
    "mcdnn_mnist": "6-epoch columns 1.42% / 1.71% / 1.50% held-out error; committee of the "
                   "three 1.12%",
    "stn_mnist": "1.02% held-out error on RTS-distorted digits after 8 epochs",
    "odenet_mnist": "1.07% held-out error after 2 epochs (cosine schedule)",
    "capsnet_mnist": "1.50% held-out error after 1 epoch",
}


def describe(path: str) -> dict:
    with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    lines = [ln.strip() for ln in doc.splitlines()]

    def field(prefix):
        return next((ln[len(prefix):].strip() for ln in lines if ln.startswith(prefix)), "")

    command = next((re.sub(r"\s+", " ", ln) for ln in lines
                    if ln.startswith("python -m jaxvision.train")), "")
    return dict(name=os.path.basename(path)[:-3], title=lines[0] if lines else "",
                command=command, hardware=field("Hardware assumed:"),
                paper=field("Paper's figure:"))


def table() -> str:
    rows = ["| config | reproduces | paper's figure | reached here | hardware assumed | command |",
            "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
        d = describe(path)
        reached = REACHED.get(d["name"], "not run here")
        cells = [f"`{d['name']}`", d["title"], d["paper"] or "-", reached,
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
