"""Turn a model into served, versioned Triton models, refusing anything that is not right.

model sources (one per command; see builders/sources/):
  --run-dir RUN                                   a training run (manifest.json + model.safetensors)
  --hf-dir DIR --task embedding|classification    a Hugging Face folder (sentence-transformers layout honoured)
  --onnx FILE --signature S.toml                  an ONNX file exported elsewhere (export skipped)
  --factory pkg.mod:fn --weights W.safetensors --signature S.toml   any nn.Module
  --heldout FILE.jsonl|FILE.npz                   held-out data (texts with labels or pairs, or tensors)

steps (each is also a command below):
  build      the whole pipeline: export -> parity -> INT8 -> TensorRT -> configs + lint -> gate -> publish [-> load]
  export     PyTorch -> ONNX (named, dynamic axes, checked, simplified) + parity report vs PyTorch
  quantize   INT8 dynamic quantization for the CPU path: size, latency, accuracy vs FP32, accept/refuse
  tensorrt   ONNX -> TensorRT plan + metadata + parity vs ONNX Runtime (GPU hosts with TensorRT)
  plan-check is a plan (its model.plan.json) usable with this host's GPU and TensorRT?
  config     print or write the generated config.pbtxt files for a training run
  lint       check a model folder's config.pbtxt against its artifacts (non-zero exit on any finding)
  publish    publish a built package as version N+1 (and load it on a running Triton)
  versions   list a model's kept versions with their lineage
  rollback   serve a kept version again (published as the newest version), optionally loading it live
  watch      follow a training run and publish every new best checkpoint through the same gate
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and main(argv=None, args=None); the options
# several commands share live in builders.cli_options.
COMMANDS = [
    ("build", "builders.build_cli", "the whole pipeline, from a training run to a published (and loaded) version"),
    ("export", "builders.export_cli", "PyTorch -> ONNX with parity against PyTorch"),
    ("quantize", "builders.quantize_cli", "INT8 dynamic quantization with the accuracy check (exit 3 when refused)"),
    ("tensorrt", "builders.tensorrt_cli",
     "TensorRT plan + metadata + parity vs ONNX Runtime (needs TensorRT and a GPU)"),
    ("plan-check", "builders.plan_check_cli", "refuse a plan built for another GPU or TensorRT version"),
    ("config", "builders.config_cli", "print or write the generated configurations for a model source"),
    ("lint", "builders.lint_cli", "check config.pbtxt against the model's artifacts (non-zero exit on any finding)"),
    ("publish", "builders.publish_cli", "publish a package built with `build --no-publish` as version N+1"),
    ("versions", "builders.versions_cli", "list a model's kept versions (* marks the serving one)"),
    ("rollback", "builders.rollback_cli", "serve kept version N again: it is re-published as the newest version"),
    ("watch", "builders.watch_cli", "publish every new best checkpoint of a training run through the gate"),
]

EPILOG = """examples:
  python -m builders build --run-dir runs/digits --repository model_repository --triton-url 127.0.0.1:8000
  python -m builders build --hf-dir DIR --task embedding --name minilm --heldout PAIRS.jsonl
  python -m builders build --run-dir runs/digits --no-publish --work-dir .cache/builds
  python -m builders publish --package BUILD_DIR/package --repository model_repository
  python -m builders versions --model digits
  python -m builders rollback --model digits --version 2 --triton-url 127.0.0.1:8000
  python -m builders lint model_repository/digits
  python -m builders watch --run-dir runs/textclf --triton-url 127.0.0.1:8000

exit status: 0 done, 2 bad input (one line naming what is wrong), 3 a quality gate refused (nothing published).
`python -m builders COMMAND --help` explains every option of a command."""


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("python -m builders", __doc__, COMMANDS, EPILOG)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    run_cli(main)
