"""The README commands check their system packages first: a missing Prometheus stops `make demo` within seconds."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import system_packages

ROOT = Path(__file__).resolve().parents[2]


def _path_without(*commands: str, tmp_path: Path) -> str:
    """A PATH that has every directory of ours except those holding ``commands``, plus this Python as ``python``."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    kept = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not any((Path(d) / c).exists() for c in commands)]
    return os.pathsep.join([str(shim), *kept])


def test_everything_the_tests_need_is_present_here():
    assert system_packages.missing("test") == []


@pytest.mark.parametrize("entry", [["-m", "common.system_packages", "--for", "demo"], ["-m", "demo"]])
def test_demo_without_prometheus_stops_within_seconds_saying_what_to_install(entry, tmp_path):
    env = dict(os.environ, PATH=_path_without("prometheus", "promtool", tmp_path=tmp_path),
               PLATFORM_INSTALL_SYSTEM_PACKAGES="0")
    assert shutil.which("prometheus", path=env["PATH"]) is None
    started = time.monotonic()
    result = subprocess.run([sys.executable, *entry], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "Prometheus and promtool" in message and "apt-get install -y --no-install-recommends prometheus" in message
    assert "Traceback" not in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s to report a missing package"


def test_install_command_names_each_package_once():
    command = system_packages.install_command([system_packages.PROMETHEUS, system_packages.PROMETHEUS,
                                               system_packages.COMPOSE])
    assert command.endswith("apt-get install -y --no-install-recommends prometheus docker-compose")
