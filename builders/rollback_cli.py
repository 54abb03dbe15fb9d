"""``python -m builders rollback``: serve kept version N again. Its files are verified and its kept configuration
linted, then it is re-published as the newest version (lineage records ``rollback_of``), its ensemble family with it;
with ``--triton-url`` it is loaded live.

Example::

    python -m builders rollback --repository model_repository --model digits --version 2 --triton-url 127.0.0.1:8000
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--model", required=True, help="model name (its ensemble family follows it)")
    parser.add_argument("--version", type=int, required=True, help="the kept version to serve again")
    parser.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit mode to load it on")
    parser.add_argument("--keep", type=int, help="versions to keep per model")
    parser.add_argument("--work-dir", type=Path,
                        help="where the rollback package is assembled (overrides publish.work_dir)")
    parser.add_argument("--skip-plan-check", action="store_true",
                        help="roll back to a version whose TensorRT plan this host cannot run")
    opts.add_config(parser)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders rollback", __doc__, add_arguments, argv, args)
    import datetime as dt

    from builders.packaging import lint_package
    from builders.repository import ensure_writable, package_from_version, read_lineage, write_lineage

    ensure_writable(args.repository, "rollback")
    settings = opts.settings(args)
    work = Path(tempfile.mkdtemp(prefix=f"{args.model}.rollback.", dir=opts.work_dir(settings)))
    package = package_from_version(args.repository, args.model, args.version, work / "package")  # files verified
    findings = lint_package(package, settings)  # the kept configuration snapshot against the kept files
    if findings:
        raise UserError(f"version {args.version} of {args.model!r} does not pass the linter, nothing published: "
                        + "; ".join(findings))
    lineage = read_lineage(package.version_dir(package.primary))
    lineage["rollback_of"] = args.version
    lineage["rolled_back_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_lineage(package, lineage)
    return opts.publish(package, args, settings)


if __name__ == "__main__":
    run_cli(main)
