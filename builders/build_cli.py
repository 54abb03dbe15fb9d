"""``python -m builders build``: the whole pipeline; its help is the pipeline's own description (set below)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

from builders import cli_options as opts
from builders import pipeline as _pipeline

__doc__ = _pipeline.__doc__  # the steps are described once, where they are implemented


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_build_args(parser)
    parser.add_argument("--no-publish", action="store_true",
                        help="stop after the gate: the package stays in the build folder")
    parser.add_argument("--force", action="store_true",
                        help="build and publish even when the serving version already has these weights and settings")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders build", __doc__, add_arguments, argv, args)
    from common.files import atomic_write_json
    from builders.report import summary_lines
    from builders.repository import ensure_writable

    if not getattr(args, "no_publish", False):
        ensure_writable(args.repository, "build")  # before the pipeline runs, not after it
    report = _pipeline.build(opts.build_request(args))
    print("\n".join(summary_lines(report)))
    if args.report:
        atomic_write_json(args.report, report)
    return 0


if __name__ == "__main__":
    run_cli(main)
