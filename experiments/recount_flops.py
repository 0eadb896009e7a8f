"""Fill in the FLOP, TFLOP/s and MFU columns of benchmark CSV files from shapes alone.

    python experiments/recount_flops.py experiments/results/gpu_h100/*.csv [--write]

For every row, :func:`jaxvision.benchmark.step_flops` counts the model's nominal FLOPs for the
row's model, batch, resolution and dtype (nothing is initialised or compiled, so this runs on
any machine), and the achieved TFLOP/s and MFU follow from the row's measured step times and
its device's datasheet peak.  Prints the table; ``--write`` also rewrites the files.  Used for
rows measured on a GPU before the benchmark took its FLOPs from the lowered program.
"""
from __future__ import annotations

import argparse
import csv

from jaxvision.benchmark import COLUMNS, format_table, peak_tflops, step_flops, write_rows


def _number(v: str):
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def recount(row: dict) -> dict:
    """``row`` (values as in a benchmark CSV) with its FLOP columns recomputed."""
    row = dict(row)
    flops = step_flops(row["model"], int(row["batch"]), int(row["height"]),
                       int(row["width"]), row["dtype"])
    peak = peak_tflops(str(row.get("device") or ""), row["dtype"])
    for mode in ("train", "infer"):
        row[f"{mode}_gflop_per_step"] = row[f"{mode}_tflop_s"] = row[f"{mode}_mfu"] = None
        step_ms, count = row.get(f"{mode}_step_ms"), flops[mode]
        if count is None:
            continue
        row[f"{mode}_gflop_per_step"] = count / 1e9
        if step_ms:
            per_s = count / (float(step_ms) / 1e3)
            row[f"{mode}_tflop_s"] = per_s / 1e12
            if peak:
                row[f"{mode}_mfu"] = per_s / (peak * 1e12)
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="CSV files written by jaxvision.benchmark --out")
    p.add_argument("--write", action="store_true", help="rewrite the files in place")
    args = p.parse_args(argv)
    everything = []
    for path in args.files:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            # conv_precision: a column newer than some committed files.
            missing = set(COLUMNS) - set(reader.fieldnames or ()) - {"conv_precision"}
            if missing:
                raise SystemExit(f"{path}: not a benchmark CSV (no {', '.join(sorted(missing))})")
            rows = [recount({k: _number(v) for k, v in r.items()}) for r in reader]
        if args.write:
            write_rows(rows, path)
        everything += rows
    print(format_table(everything))
    return everything


if __name__ == "__main__":
    main()
