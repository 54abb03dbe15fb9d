"""Helpers for the monitoring tests: run the CLI as a user does, and make sure no process outlives a test."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = Path(__file__).parent / "model_repository"


def run_monitoring_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m monitoring ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "monitoring", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start_monitoring_cli(*args: str) -> subprocess.Popen:
    """``python -m monitoring ARGS`` in the background, stdout as text lines (stderr folded in)."""
    return subprocess.Popen([sys.executable, "-u", "-m", "monitoring", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    """Lines printed by ``proc`` up to and including the first one containing ``marker``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed; got:\n" + "\n".join(lines))


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user error: status 2, one line on stderr starting with 'error:', no traceback, naming every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def prometheus_processes() -> set[int]:
    """PIDs of Prometheus servers this test process started, directly or through a CLI child."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmdline and os.path.basename(cmdline[0]) == "prometheus":
            found.add(proc.pid)
    return found


@pytest.fixture
def no_leftover_prometheus():
    """Fails the test when it leaves a Prometheus it started running."""
    before = prometheus_processes()
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and prometheus_processes() - before:
        time.sleep(0.2)
    assert not prometheus_processes() - before, "a Prometheus started by this test is still running"
