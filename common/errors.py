"""One way to fail in front of a user: a sentence naming what is wrong and what was expected, no traceback.

Every command line in the platform runs its ``main`` through :func:`run_cli`, so a :class:`UserError` raised anywhere
(bad configuration, a missing file, a server that is down) ends the process with exit status 2 and one clear line on
stderr, while a genuine bug still shows its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Something the user can fix: bad input, a missing prerequisite, an unreachable server.

    The message must say what was wrong and what was expected (or what to do).
    """

    exit_code = 2


class GateFailure(UserError):
    """A quality gate refused to publish (parity, accuracy, SLO). Exit status 3 so scripts can tell it apart."""

    exit_code = 3


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a command-line ``main`` and turn user errors and Ctrl-C into clean exits."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code or 0)
