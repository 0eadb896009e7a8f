"""Training curves of one or several runs from their ``metrics.jsonl``.

    python -m jaxvision.plot /tmp/mnist_cnn [/tmp/other_run ...] --out curves.png

Three panels against the training step: training loss, learning rate and evaluation
accuracy; one line per workdir, labelled with its folder name.  Needs matplotlib
(``pip install 'jaxvision[plot]'``).
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxvision.metrics_log import read_metrics

PANELS = (("train_loss", "training loss"), ("learning_rate", "learning rate"),
          ("eval_accuracy", "eval accuracy"))


def plot(workdirs, out: str):
    """Draw the curves of ``workdirs`` into the image file ``out``; returns the figure."""
    from jaxvision.utils import require
    matplotlib = require("matplotlib", "plot", "jaxvision.plot")
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    runs = [(os.path.basename(os.path.normpath(w)), read_metrics(w)) for w in workdirs]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (key, title) in zip(axes, PANELS):
        for label, rows in runs:
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if pts:
                ax.plot(*zip(*pts), label=label, marker="o" if key == "eval_accuracy" else None,
                        markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    if len(runs) > 1:
        axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="jaxvision-plot", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", help="training workdirs (each with metrics.jsonl)")
    p.add_argument("--out", default="curves.png", help="image file to write (default "
                                                       "curves.png)")
    args = p.parse_args(argv)
    try:
        plot(args.workdirs, args.out)
    except FileNotFoundError as e:
        print(f"jaxvision-plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def cli():
    sys.exit(main())


if __name__ == "__main__":
    cli()
