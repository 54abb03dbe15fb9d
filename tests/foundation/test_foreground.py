"""The one foreground loop: a signal stops what was started, a failed start still stops, handlers come back."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from common.errors import UserError
from common.foreground import foreground, stop_requested


def test_sigterm_stops_the_server_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    calls = []
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    code = foreground("thing", start=lambda: calls.append("start"), running=lambda: True,
                      stop=lambda: calls.append("stop"), exit_reason=lambda: "?", poll_s=0.05)
    assert code == 0 and calls == ["start", "stop"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_unexpected_exit_names_the_reason_and_a_failed_start_still_stops():
    stopped = []
    with pytest.raises(UserError, match="thing exited unexpectedly: port taken"):
        foreground("thing", start=lambda: None, running=lambda: False, stop=lambda: stopped.append(1),
                   exit_reason=lambda: "port taken")

    def broken_start():
        raise UserError("bad config")

    with pytest.raises(UserError, match="bad config"):
        foreground("thing", start=broken_start, running=lambda: True, stop=lambda: stopped.append(2),
                   exit_reason=lambda: "?")
    assert stopped == [1, 2]


def test_stop_requested_is_set_by_sigint_only_inside_the_block():
    before = signal.getsignal(signal.SIGINT)
    with stop_requested() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(2)
    assert signal.getsignal(signal.SIGINT) is before
