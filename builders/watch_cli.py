"""``python -m builders watch``: follow a training run's manifest.json and publish every new best checkpoint through
the same build and gate as ``build`` (a refused checkpoint publishes nothing and watching goes on).

Example::

    python -m builders watch --run-dir runs/textclf --repository model_repository --triton-url 127.0.0.1:8000
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_build_args(parser)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between checks of manifest.json (default 5)")
    parser.add_argument("--max-builds", type=int, help="stop after this many builds (default: run until Ctrl-C)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders watch", __doc__, add_arguments, argv, args)
    from builders.watch import watch

    if opts.source_spec(args).kind() != "run_dir":
        raise UserError("watch follows a training run's manifest.json: give --run-dir (other sources are built once "
                        "with `python -m builders build`)")
    watch(opts.build_request(args), args.interval, args.max_builds)
    return 0


if __name__ == "__main__":
    run_cli(main)
