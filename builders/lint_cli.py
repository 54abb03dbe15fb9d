"""``python -m builders lint``: check a model folder's config.pbtxt (and configs/*.pbtxt) against its artifacts;
prints every finding and exits 2 when there is any, 0 with "no findings" otherwise.

Examples::

    python -m builders lint model_repository/digits
    python -m builders lint model_repository/digits --config-name tensorrt
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                        help="a model folder of a repository (or a package member)")
    parser.add_argument("--config-name",
                        help="lint configs/NAME.pbtxt only (default: config.pbtxt and every configs/*.pbtxt)")
    parser.add_argument("--no-policy", action="store_true",
                        help="skip policy checks (bounded rejecting queue); mismatches are always checked")
    parser.add_argument("--require-python-queue-policy", action="store_true",
                        help="require the bounded queue on python-backend models too (off by default, like the "
                             "builders' cpu_runtime.queue_policy: Triton 2.51 delays ~0.5%% of their requests by "
                             "~500 ms with one)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders lint", __doc__, add_arguments, argv, args)
    from builders.lint import lint_all, lint_model_dir
    from builders.repository import VERSION_STAGE

    model_dir = args.model_dir
    version_dirs = None
    if (model_dir / VERSION_STAGE).is_dir() and not any(p.name.isdigit() for p in model_dir.iterdir()):
        version_dirs = {VERSION_STAGE: model_dir / VERSION_STAGE}  # a package member, before publication
    if args.config_name:
        findings = lint_model_dir(model_dir, args.config_name, not args.no_policy, version_dirs,
                                  args.require_python_queue_policy)
    else:
        findings = lint_all(model_dir, not args.no_policy, version_dirs, args.require_python_queue_policy)
    for finding in findings:
        print(f"{model_dir}/{finding}")
    if findings:
        raise UserError(f"{len(findings)} finding(s) in {model_dir}")
    print(f"{model_dir}: no findings")
    return 0


if __name__ == "__main__":
    run_cli(main)
