"""List the models a Triton server knows, with their state, and (with --details) what they take and return.

Examples::

    python -m clients models
    python -m clients models --protocol grpc --url 127.0.0.1:8001 --details --json
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

from clients.cli_options import add_connection_arguments, client_config, emit_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--details", action="store_true",
                        help="also show inputs, outputs, batch limit and labels of every ready model")
    add_connection_arguments(parser)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m clients models", __doc__, add_arguments, argv, args)
    from clients.client import TritonClient

    with TritonClient(config=client_config(args)) as client:
        index = client.models()
        details = {}
        if args.details:
            for entry in index:
                if entry["state"] == "READY" and entry["name"] not in details:
                    details[entry["name"]] = client.model_info(entry["name"])
    if args.json:
        emit_json([{**entry, **({"info": details[entry["name"]].to_json()} if entry["name"] in details else {})}
                   for entry in index])
        return 0
    if not index:
        print(f"{client.protocol}://{client.url} serves no models")
        return 0
    print(f"{'model':<24} {'version':<8} {'state':<12} reason")
    for entry in index:
        print(f"{entry['name']:<24} {entry['version'] or '-':<8} {entry['state'] or '-':<12} {entry['reason']}")
    for name, info in details.items():
        print(f"\n{name} (max_batch_size {info.max_batch_size}, versions {', '.join(info.versions)})")
        print(f"  inputs:  {info.describe_inputs()}")
        print(f"  outputs: {info.describe_outputs()}")
        if info.labels:
            print(f"  labels:  {', '.join(info.labels)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
