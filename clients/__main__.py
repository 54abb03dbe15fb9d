"""``python -m clients``: one command line for serving and querying Triton."""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

from common.errors import run_cli

# (command, module, one-line help). Each module has add_arguments(parser) and main(argv=None, args=None).
COMMANDS = [
    ("serve", "clients.serve", "start the real Triton server against a model repository and wait for readiness"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args._module.main(args=args)


if __name__ == "__main__":
    run_cli(main)
