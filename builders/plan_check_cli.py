"""``python -m builders plan-check``: is a TensorRT plan (described by its model.plan.json) usable with this host's
GPU and TensorRT? Exits 0 saying so, or 2 naming every mismatch (a plan built for another GPU or TensorRT version).

Example::

    python -m builders plan-check model_repository/digits_trt/3/model.plan
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", type=Path, help="path of model.plan (its model.plan.json is read)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders plan-check", __doc__, add_arguments, argv, args)
    from builders.tensorrt_meta import check_compatible, host_info, read_metadata

    meta = read_metadata(args.plan)
    host = host_info()
    problems = check_compatible(meta, host, str(args.plan))
    if problems:
        raise UserError("; ".join(problems))
    print(f"{args.plan}: compatible with this host (TensorRT {host.tensorrt_version}, "
          f"{', '.join(f'{n} ({c})' for n, c in host.gpus)})")
    return 0


if __name__ == "__main__":
    run_cli(main)
