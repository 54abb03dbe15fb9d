"""Command-line options every client command shares (where, which protocol, deadlines) and how they become a
:class:`clients.settings.ClientConfig`: defaults, then ``--config FILE``, then the flags."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from common.errors import UserError
from common.files import atomic_write_text

from clients.settings import ClientConfig, load_client_config, normalize_url


def add_connection_arguments(parser: argparse.ArgumentParser, retries: bool = True) -> None:
    parser.add_argument("--protocol", choices=["http", "grpc"],
                        help="wire protocol (default http, or the --config file's)")
    parser.add_argument("--url", help="server as HOST:PORT (default 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    parser.add_argument("--config", help="TOML/YAML/JSON file with ClientConfig fields (protocol, url, retry.*, "
                                         "connection.*, shared_memory); flags override it")
    if retries:
        parser.add_argument("--timeout", type=float, dest="timeout_s",
                            help="deadline of one attempt in seconds (default 10)")
        parser.add_argument("--budget", type=float, dest="budget_s",
                            help="deadline of the whole call, retries and pauses included, in seconds (default 20)")
        parser.add_argument("--max-attempts", type=int, dest="max_attempts",
                            help="stop after this many attempts even if budget is left (default: as many as fit)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def client_config(args: argparse.Namespace, **extra: Any) -> ClientConfig:
    """The configuration the flags describe, validated (a bad --url or value is a one-line error)."""
    protocol = getattr(args, "protocol", None)
    file_protocol = None
    if args.config:
        file_protocol = load_client_config(args.config).protocol
    effective = protocol or file_protocol or "http"
    overrides: dict[str, Any] = {"protocol": protocol}
    if args.url:
        try:
            overrides["url"] = normalize_url(args.url, effective)
        except ValueError as exc:
            raise UserError(f"--url: {exc}") from None
    for flag, key in (("timeout_s", "retry.timeout_s"), ("budget_s", "retry.budget_s"),
                      ("max_attempts", "retry.max_attempts")):
        overrides[key] = getattr(args, flag, None)
    for key, value in extra.items():
        overrides[key] = value
    return load_client_config(args.config, overrides)


def emit_json(data: Any, output: str | None = None) -> None:
    """Print ``data`` as JSON, or write it atomically to ``output``."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if output:
        atomic_write_text(output, text + "\n")
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)
