"""Running something in the foreground until Ctrl-C or SIGTERM: one implementation for every launcher.

Why: the pattern (install handlers for SIGINT and SIGTERM, start, wait, report an unexpected exit, stop, restore the
previous handlers) was copied into each launcher, and the copies drifted (one never restored its handlers). Two
shapes cover them all:

- :func:`foreground` for a server process we start and watch (Triton, Prometheus);
- :func:`stop_requested` for a loop of our own that checks an event between steps (watchers, exporters).
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from common.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _handlers(handler) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs; the previous handlers come back afterwards."""
    event = threading.Event()
    with _handlers(lambda _signum, _frame: event.set()):
        yield event


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def foreground(name: str, start: Callable[[], None], running: Callable[[], bool], stop: Callable[[], None],
               exit_reason: Callable[[], str], poll_s: float = 0.5) -> int:
    """Start ``name``, wait while it runs, stop it on Ctrl-C/SIGTERM (exit status 0) or report why it exited.

    ``stop`` always runs, also when ``start`` fails half-way or a signal arrives during it, so nothing outlives the
    command.
    """
    with _handlers(_interrupt):
        try:
            start()
            print("press Ctrl-C to stop", flush=True)
            while running():
                time.sleep(poll_s)
            raise UserError(f"{name} exited unexpectedly: {exit_reason()}")
        except KeyboardInterrupt:
            print(f"stopping {name}…", flush=True)
            return 0
        finally:
            stop()
