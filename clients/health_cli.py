"""Check that Triton is up: live, ready, and (with --model) that a model is ready, waiting up to --timeout.

Examples::

    python -m clients health --url 127.0.0.1:8000 --timeout 30
    python -m clients health --protocol grpc --url 127.0.0.1:8001 --model digits --timeout 60 --json

Polls until everything asked for is ready, then prints the state and exits 0. When --timeout passes first it prints
one line naming the URL and what was not ready, and exits 2 (usable as a container health check or a deploy gate).
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from common import cli
from common.errors import UserError, run_cli

from clients.cli_options import add_connection_arguments, client_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for readiness; 0 checks once (default 10)")
    parser.add_argument("--model", help="also require this model to be ready")
    parser.add_argument("--version", help="with --model: require this version (default: the server's choice)")
    add_connection_arguments(parser, retries=False)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m clients health", __doc__, add_arguments, argv, args)
    if args.timeout < 0:
        raise UserError(f"--timeout must be >= 0 seconds (got {args.timeout:g})")
    from clients.client import TritonClient

    with TritonClient(config=client_config(args)) as client:
        try:
            waited = client.wait_until_ready(args.timeout, model=args.model, version=args.version)
        except UserError:
            if args.json:
                print(json.dumps(client.health(args.model, timeout_s=1.0)))
            raise
        report = client.health(args.model)
        report["server"] = client.server_version()
        report["waited_s"] = round(waited, 3)
    if args.json:
        print(json.dumps(report))
    else:
        model = f", model '{args.model}' ready" if args.model else ""
        print(f"{report['protocol']}://{report['url']}: live, ready{model} ({report['server']}, "
              f"after {report['waited_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
