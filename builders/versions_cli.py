"""``python -m builders versions``: list a model's kept versions with their lineage (accuracy, build time, weights
and ONNX hashes, rollbacks); ``*`` marks the serving one. Exits 2 when the model's family is split across versions.

Example::

    python -m builders versions --repository model_repository --model digits
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m builders versions", __doc__, add_arguments, argv, args)
    from builders.publication import inspect
    from builders.repository import read_lineage, serving_version, versions

    model_dir = args.repository / args.model
    found = versions(model_dir)
    if not found:
        raise UserError(f"{model_dir} has no versions (expected a model published by `python -m builders build`)")
    family = next((s for s in inspect(args.repository) if args.model in s.members), None)
    serving = family.version if family and family.version is not None else serving_version(model_dir)
    rows = []
    for number in found:
        lineage = read_lineage(model_dir / str(number))
        rows.append({"version": number, "serving": number == serving, "built_at": lineage.get("built_at"),
                     "accuracy": lineage.get("heldout", {}).get("accuracy"),
                     "weights_sha256": lineage.get("checkpoint", {}).get("weights_sha256"),
                     "onnx_sha256": (lineage.get("onnx") or {}).get("sha256"),
                     "rollback_of": lineage.get("rollback_of")})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["serving"] else " "
        acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "   ?  "
        extra = f"  rollback of v{row['rollback_of']}" if row["rollback_of"] else ""
        print(f"{mark} v{row['version']:<4} accuracy {acc}  built {row['built_at']}  weights "
              f"{(row['weights_sha256'] or '?')[:12]}  onnx {(row['onnx_sha256'] or '?')[:12]}{extra}")
    print("(* = serving: the version its family's publication record names, the highest one)")
    if family and family.split:
        raise UserError(family.describe() + " (the next publish, or `python -m clients serve` before it starts "
                        "Triton, restores the recorded version)")
    return 0


if __name__ == "__main__":
    run_cli(main)
