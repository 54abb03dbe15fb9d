"""Child processes that never outlive their parent: servers (Triton, Prometheus) and pipeline steps.

* :func:`death_signal_for_this_thread` is the ``preexec_fn`` that makes Linux send SIGTERM to the child when the
  parent dies (``PR_SET_PDEATHSIG``), so even ``kill -9`` of a launcher leaves no server behind. Linux delivers it
  when the forking *thread* exits, so it is only armed from the main thread.
* :func:`stop` ends a child (or its whole process group): SIGTERM, a grace period, then SIGKILL. Idempotent.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading


def set_parent_death_signal() -> None:
    """In the child before exec: die with SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def death_signal_for_this_thread():
    """The pre-exec hook to use: the parent-death signal from the main thread, nothing from a worker thread."""
    return set_parent_death_signal if threading.current_thread() is threading.main_thread() else None


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen | None, grace_s: float, group: bool = False) -> int | None:
    """SIGTERM ``proc`` (its process group with ``group``, for children started with ``start_new_session``), wait
    ``grace_s``, then SIGKILL. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, group)
            proc.wait(timeout=10)
    return proc.returncode
