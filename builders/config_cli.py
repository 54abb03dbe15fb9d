"""``python -m builders config``: print (or write into a model folder) the config.pbtxt files a build would generate
for a model source, for every target when both INT8 and TensorRT are produced, or one ``--target``.

Examples::

    python -m builders config --run-dir runs/digits
    python -m builders config --run-dir runs/digits --target tensorrt --output /tmp/digits
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
    parser.add_argument("--name", help="model name (default: the manifest's)")
    parser.add_argument("--target", choices=["cpu", "cpu_int8", "onnxruntime", "tensorrt"],
                        help="only this target's configuration")
    parser.add_argument("--output", type=Path, help="write into this model folder instead of printing")
    opts.add_config(parser)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders config", __doc__, add_arguments, argv, args)
    from common.manifest import read_manifest
    from builders import triton_configs as tc
    from builders.packaging import package_configs
    from builders.shapes import derive_profiles

    settings = opts.settings(args)
    if args.run_dir is not None and args.hf_dir is None and args.onnx_source is None and args.factory is None:
        manifest = read_manifest(args.run_dir, verify=False)  # no torch, no data: the manifest says it all
    else:
        manifest = opts.open_model_source(args).serving_view()
    name = args.name or manifest.model
    profiles = derive_profiles(manifest.inputs, manifest.preprocessing, settings)
    # what a build would write when INT8 and TensorRT are both produced
    vocab = tc.tokenizer_vocab_size(Path(args.run_dir or ".") / manifest.tokenizer.file) if manifest.tokenizer else None
    configs = package_configs(name, manifest, profiles, settings, int8=settings.quantize.enabled, plan=True,
                              vocab_size=vocab)
    for relative, config in configs.items():
        if args.target and not relative.endswith(f"{args.target}.pbtxt") and not (
                args.target == "cpu" and relative == "config.pbtxt"):
            continue
        text = tc.to_text(config)
        if args.output:
            from common.files import atomic_write_text

            atomic_write_text(args.output / relative, text)
            print(f"wrote {args.output / relative}")
        else:
            print(f"# {relative}\n{text}")
    return 0


if __name__ == "__main__":
    run_cli(main)
