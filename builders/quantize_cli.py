"""``python -m builders quantize``: INT8 dynamic quantization for the CPU path, with size, latency and quality
against FP32; writes model.int8.onnx and quantize.json to ``--output`` and exits 3 when the INT8 model is refused.

Example::

    python -m builders quantize --run-dir runs/digits --onnx BUILD_DIR/model.onnx --output BUILD_DIR/int8
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import GateFailure, run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_onnx_step_args(parser, "the FP32 ONNX file to quantize", "folder for model.int8.onnx and quantize.json")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders quantize", __doc__, add_arguments, argv, args)
    from common.files import atomic_write_json
    from builders.quantize import build_int8

    settings = opts.settings(args)
    source = opts.open_model_source(args)
    args.output.mkdir(parents=True, exist_ok=True)
    report = build_int8(source, source.heldout(), args.onnx, args.output / "model.int8.onnx",
                        settings.quantize, settings.parity.batch_size)
    atomic_write_json(args.output / "quantize.json", report.to_dict())
    print(report.summary())
    if not report.accepted:
        raise GateFailure(f"INT8 refused: {report.reason}")
    return 0


if __name__ == "__main__":
    run_cli(main)
