"""``python -m benchmarks``: load tests, side-by-side comparisons and throughput measurements.

Every command prints its figures and writes them (JSON, and PNG plots where they help) under benchmarks/results/.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and run(args) -> int | None.
COMMANDS = [
    ("loadtest", "benchmarks.loadtest", "headless Locust run against Triton (HTTP or gRPC) with an optional SLO gate"),
    ("compare", "benchmarks.compare", "every way to serve a model side by side: textclf (default), or --model minilm "
                                      "against Infinity, sentence-transformers, FastAPI and ONNX Runtime"),
    ("locust", "benchmarks.locust_service", "Locust as a long-running service (web UI master or worker) for docker compose"),
    ("training", "benchmarks.training_throughput", "training throughput (samples/s) of every model on this machine"),
    ("protocols", "benchmarks.client_protocols", "HTTP vs gRPC vs gRPC+shared memory against the real Triton"),
    ("gpu-check", "benchmarks.gpu_check", "everything only a GPU can run (AMP, NCCL, NVML, TensorRT, CUDA inference): "
                                          "PASS/FAIL/SKIP table + JSON, under 8 minutes"),
]


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("python -m benchmarks", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(build_parser(), argv, entry="run")


if __name__ == "__main__":
    run_cli(main)
