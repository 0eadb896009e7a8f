"""Parameters and multiply-accumulates of every registered model at its default resolution.

    python experiments/model_table.py --out experiments/model_table.md [--doc docs/models.md]

Parameters are counted with ``jax.eval_shape`` (nothing allocated).  MACs are XLA's flop
count of one eval-mode forward pass of a single image divided by two, from the HLO cost
analysis of the lowered program (nothing compiled or run).  With ``--doc`` the table
replaces the block between ``<!-- model-table -->`` markers.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxvision  # noqa: E402
from jaxvision.registry import model_family  # noqa: E402
from jaxvision.utils import variable_shapes  # noqa: E402


def count(name: str):
    model = jaxvision.create_model(name)
    h, w, c = jaxvision.model_cfg(name)["input_size"]
    shapes = variable_shapes(model, (h, w, c))
    params = int(sum(x.size for x in jax.tree.leaves(shapes.get("params", {}))))
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(shapes, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    return params, flops / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pattern", default="*")
    ap.add_argument("--out", default="")
    ap.add_argument("--doc", default="",
                    help="a Markdown file whose <!-- model-table --> block is replaced")
    args = ap.parse_args()
    rows = ["| model | family | input | params | GMACs |", "|---|---|---|---:|---:|"]
    for name in jaxvision.list_models(args.pattern, exclude="test_*"):
        params, macs = count(name)
        h, w, c = jaxvision.model_cfg(name)["input_size"]
        rows.append(f"| `{name}` | {model_family(name)} | {h}x{w}x{c} | {params:,} | "
                    f"{macs / 1e9:.3f} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    if args.doc:
        text = open(args.doc).read()
        block = ("<!-- model-table -->\n" + table + "<!-- /model-table -->")
        new, n = re.subn(r"<!-- model-table -->.*?<!-- /model-table -->", block, text,
                         flags=re.S)
        if n != 1:
            sys.exit(f"{args.doc} has no <!-- model-table --> block")
        with open(args.doc, "w") as f:
            f.write(new)


if __name__ == "__main__":
    main()
