"""``python -m builders export``: PyTorch -> ONNX (named, dynamic axes, checked, simplified) and its parity report
against PyTorch, written to ``--output`` (model.onnx, parity.json).

Example::

    python -m builders export --run-dir runs/digits --output .cache/export/digits
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_source_args(parser)
    parser.add_argument("--output", type=Path, required=True, help="folder for model.onnx and parity.json")
    opts.add_config(parser)
    opts.add_overrides(parser)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders export", __doc__, add_arguments, argv, args)
    from builders.pipeline import export_and_verify

    settings = opts.settings(args)
    source = opts.open_model_source(args)
    result = export_and_verify(source, source.heldout(), args.output, settings)
    print(f"wrote {result.onnx.path} ({result.onnx.size_bytes / 1e6:.2f} MB, opset {result.onnx.opset}, "
          f"simplified: {result.simplify.get('kept')})")
    print(result.parity.summary())
    print(f"report: {args.output / 'parity.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
