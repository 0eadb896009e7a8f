"""Throughput of jaxvision models against timm/PyTorch on this machine.

    python experiments/benchmark.py --models resnet18 --batch-sizes 32 \
        --resolutions 64,224 --compare torch --out results/bench_resnet18.csv

Prints a table with jaxvision's train/inference step times and their ratio to PyTorch's
(< 1 means jaxvision is faster); all options: ``python -m jaxvision.benchmark --help``.
"""
from jaxvision.benchmark import cli

if __name__ == "__main__":
    cli()
