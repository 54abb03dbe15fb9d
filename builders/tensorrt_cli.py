"""``python -m builders tensorrt``: ONNX -> TensorRT plan, its metadata (model.plan.json: GPU, TensorRT version,
profiles) and parity against ONNX Runtime. Needs TensorRT and a GPU; elsewhere it exits 2 saying which is missing.

Example::

    python -m builders tensorrt --run-dir runs/digits --onnx BUILD_DIR/model.onnx --output BUILD_DIR/tensorrt
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli

from builders import cli_options as opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_onnx_step_args(parser, "the ONNX file to build from", "folder for model.plan and model.plan.json")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders tensorrt", __doc__, add_arguments, argv, args)
    from builders import tensorrt_build
    from builders.pipeline import HeldOutSplits
    from builders.shapes import derive_profiles

    reason = tensorrt_build.unavailable_reason()
    if reason:
        raise UserError(f"cannot build a TensorRT plan here: {reason}")
    settings = opts.settings(args)
    source = opts.open_model_source(args)
    view = source.serving_view()
    profiles = derive_profiles(view.inputs, view.preprocessing, settings)
    splits = HeldOutSplits(test=source.heldout(), val=source.calibration())
    result = tensorrt_build.build_and_verify(source, splits, args.onnx, profiles, settings, args.output)
    print(result.summary())
    print(f"wrote {result.plan} and {result.files()['metadata']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
