"""Benchmarks and load tests: figures are printed and written under ``benchmarks/results/``.

``python -m benchmarks --help`` lists the commands. Tests check correctness; speed and memory targets are checked here.
"""
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
