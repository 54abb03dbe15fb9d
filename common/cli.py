"""One shape for every component's command line: ``python -m <package> <command> [options]``.

Each package's ``__main__`` lists its commands as ``(name, module, one-line help)``; every module provides
``add_arguments(parser)`` and an entry function taking the parsed ``args``. Modules are imported when the parser is
built, so ``--help`` of the package documents every command and a broken module fails loudly, not by vanishing.
A component that is one command (``python -m training [options]``) builds its parser with :func:`command_parser` and
runs ``main`` under :func:`common.errors.run_cli` like every other.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

Command = tuple[str, str, str]  # (command, module, one-line help)


def build_parser(prog: str, description: str | None, commands: Sequence[Command],
                 epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in commands:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None, entry: str = "main") -> int:
    """Parse ``argv`` and call the chosen command module's ``entry`` (``main(args=...)`` or ``run(args)``)."""
    args = parser.parse_args(argv)
    function = getattr(args._module, entry)
    return (function(args=args) if entry == "main" else function(args)) or 0


def command_parser(prog: str, description: str | None, add_arguments=None,
                   epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command on its own: the same formatting as :func:`build_parser`'s commands (descriptions and
    epilogs kept as written), options from ``add_arguments(parser)``. A component that is a single command with no
    subcommands (``python -m training``) builds its whole command line with this."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if add_arguments is not None:
        add_arguments(parser)
    return parser


def command_args(prog: str, description: str | None, add_arguments, argv: Sequence[str] | None,
                 args: argparse.Namespace | None, epilog: str | None = None) -> argparse.Namespace:
    """The parsed arguments of one command module, whether its package's CLI parsed them already (``args``) or the
    module runs on its own (``argv``): every command's ``main(argv=None, args=None)`` starts with this line."""
    if args is not None:
        return args
    return command_parser(prog, description, add_arguments, epilog).parse_args(argv)
