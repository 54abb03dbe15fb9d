"""``python -m monitoring targets``: which scrape targets a Prometheus reaches, and why the others fail.

The first thing to run when a panel says "no data". Prints one line per target and exits with status 2 when any target
is down or a job given with ``--expect`` has no target at all, naming each one and Prometheus' reason.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import UserError
from monitoring.prom_api import PrometheusAPI, describe_down


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="Prometheus base URL (default http://127.0.0.1:9090)")
    parser.add_argument("--expect", action="append", default=[], metavar="JOB",
                        help="a job that must have targets, e.g. triton (repeatable)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m monitoring targets", __doc__, add_arguments, argv, args)
    targets = PrometheusAPI(args.prometheus).targets()
    for t in targets:
        print(f"  {t.job:<14} {t.instance:<28} {t.health}", flush=True)
    problems = describe_down(targets, args.expect)
    if problems:
        raise UserError("; ".join(problems))
    print(f"all {len(targets)} targets are up", flush=True)
    return 0
