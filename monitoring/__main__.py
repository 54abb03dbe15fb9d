"""``python -m monitoring``: one command line for the platform's monitoring (see monitoring/README.md)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and main(argv=None, args=None); external
# tools (prometheus, promtool, NVML) are looked up only when their command runs, so every --help works anywhere.
COMMANDS = [
    ("generate", "monitoring.generate",
     "regenerate rules, promtool tests, Prometheus/Grafana provisioning and dashboards from slo.toml (--check: "
     "fail when committed files are stale)"),
    ("check", "monitoring.promtool",
     "promtool check config / check rules / test rules on the generated files, plus the staleness check"),
    ("prometheus", "monitoring.local_prometheus",
     "start the real Prometheus on this machine for given targets, with the generated rules, until Ctrl-C"),
    ("targets", "monitoring.targets_cli", "show which scrape targets a Prometheus reaches and why the others fail"),
    ("panels", "monitoring.render", "render the main dashboard panels as PNG from a Prometheus time range"),
    ("gpu-exporter", "monitoring.gpu_exporter",
     "serve per-GPU utilisation, memory, power and temperature from NVML (reports 'no GPU' on CPU hosts)"),
]


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("python -m monitoring", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    run_cli(main)
