"""Helpers for the training tests: run the real ``python -m training`` command line in a subprocess.

Every end-to-end test trains ``digits`` (real data, seconds per epoch); ``--threads 1`` keeps the runs deterministic
and friendly to a shared 2-core machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def training_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "training", *args]


def run_training(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m training ARGS`` to completion; output captured as text."""
    proc = subprocess.run(training_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m training {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def start_training(*args: str, log: Path) -> subprocess.Popen:
    """Start ``python -m training ARGS`` in the background, stderr+stdout to ``log``."""
    handle = open(log, "w")
    return subprocess.Popen(training_command(*args), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                            env=subprocess_env())


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``predicate`` until it returns a truthy value; fail with the log tail on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{tail}")


def stop_process(proc: subprocess.Popen) -> None:
    """Make sure a background trainer started by a test is gone (it is ours: we hold its Popen)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def digits_quick():
    """Arguments of a short digits run (a few seconds per epoch on one thread)."""
    return ["--model", "digits", "--seed", "3", "--threads", "1", "--progress", "off", "--max-train-samples", "640"]
