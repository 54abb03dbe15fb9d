"""``python -m clients``: one command line for serving and querying Triton."""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and main(argv=None, args=None).
COMMANDS = [
    ("serve", "clients.serve", "start the real Triton server against a model repository and wait for readiness"),
    ("infer", "clients.infer_cli", "send inputs (.npy/.npz/.json, or texts) to a served model and print predictions"),
    ("embed", "clients.embed_cli", "embed texts with a served embedding model: norms and values, JSON, or a .npy file"),
    ("health", "clients.health_cli", "wait until the server (and a model) is live and ready, or fail naming the URL"),
    ("models", "clients.models_cli", "list the models a server knows, their state, inputs and outputs"),
]

EPILOG = """examples:
  python -m clients serve --repository model_repository
  python -m clients health --url 127.0.0.1:8000 --timeout 30 --model digits
  python -m clients models --details
  python -m clients infer --model digits --input images.npy --protocol grpc --json
  python -m clients infer --model textclf_text --text "my parcel never arrived"
  python -m clients embed --model minilm_text --text "my parcel never arrived" --output vectors.npy

`python -m clients COMMAND --help` explains every option of a command."""


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("python -m clients", __doc__, COMMANDS, EPILOG)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    run_cli(main)
