"""``python -m deploy validate FILE...``: validate any manifest file offline, as ``render`` validates overlays.

Kubernetes objects against the API schemas, custom resources against the CRDs in deploy/kubernetes/crds/, and the
cross-object rules (namespace, Secrets declared in settings.toml, replica counts). One line per failure, exit 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError

from deploy.settings import DEFAULT_SETTINGS_FILE, load_settings
from deploy.validate import documents, validate_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML manifest files")
    parser.add_argument("--settings", default=str(DEFAULT_SETTINGS_FILE), help="settings file")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m deploy validate", __doc__, add_arguments, argv, args)
    settings = load_settings(args.settings)
    total = 0
    for path in args.files:
        if not path.is_file():
            raise UserError(f"{path} does not exist (expected a YAML manifest file)")
        for obj in documents(path.read_text(encoding="utf-8"), str(path)):
            validate_object(obj, settings, label=f"{path}: ")
            total += 1
    print(f"{total} object(s) in {len(args.files)} file(s) are valid", flush=True)
    return 0
