"""``python -m builders publish``: publish a package built with ``build --no-publish`` as version N+1 of a directory
or s3:// repository, after linting it; with ``--triton-url`` load it live (a version that fails to load is retracted).

Examples::

    python -m builders publish --package BUILD_DIR/package --repository model_repository --triton-url 127.0.0.1:8000
    python -m builders publish --package BUILD_DIR/package --repository s3://127.0.0.1:9000/models/repo
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--package", type=Path, required=True, help="the package/ folder of a build directory")
    parser.add_argument("--repository", type=opts.repository_arg, default=Path("model_repository"),
                        help="model repository: a directory, or s3://[host:port/]bucket/prefix (Triton's form)")
    parser.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit mode to load the version on (s3:// "
                                             "repositories: a comma-separated list, one per replica)")
    parser.add_argument("--keep", type=int, help="versions to keep per model")
    parser.add_argument("--work-dir", type=Path, help="where rollout records go (overrides publish.work_dir)")
    parser.add_argument("--skip-plan-check", action="store_true",
                        help="publish a TensorRT plan this host cannot run (e.g. a builder host publishing for GPU "
                             "servers)")
    opts.add_config(parser)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders publish", __doc__, add_arguments, argv, args)
    from builders.packaging import lint_package
    from builders.repository import Package, ensure_writable

    ensure_writable(args.repository, "publish")
    settings = opts.settings(args)
    package = Package.read(args.package)
    findings = lint_package(package, settings)
    if findings:
        raise UserError("package does not pass the linter, nothing published: " + "; ".join(findings))
    return opts.publish(package, args, settings)


if __name__ == "__main__":
    run_cli(main)
