"""``python -m benchmarks``: load tests, side-by-side comparisons and throughput measurements.

Every command prints its figures and writes them (JSON, and PNG plots where they help) under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and run(args) -> int | None.
COMMANDS = [
    ("loadtest", "benchmarks.loadtest", "headless Locust run against Triton (HTTP or gRPC) with an optional SLO gate"),
    ("compare", "benchmarks.compare", "every way to serve textclf side by side (in-process, Triton, FastAPI baseline)"),
    ("locust", "benchmarks.locust_service", "Locust as a long-running service (web UI master or worker) for docker compose"),
    ("training", "benchmarks.training_throughput", "training throughput (samples/s) of every model on this machine"),
    ("protocols", "benchmarks.client_protocols", "HTTP vs gRPC vs gRPC+shared memory against the real Triton"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args._module.run(args) or 0


if __name__ == "__main__":
    run_cli(main)
