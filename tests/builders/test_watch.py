"""Watch mode follows a training run: each new manifest is built through the gate; Ctrl-C stops it cleanly."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builders.repository import versions
from tests.builders.trainer import DIGITS_ARCH, train_run

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"watch exited early with {proc.returncode}"
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the watch to act")


def test_watch_publishes_new_checkpoints_through_the_gate_and_stops_on_ctrl_c(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    repository = tmp_path / "repo"
    config = tmp_path / "builders.toml"
    config.write_text("[quantize]\nenabled = false\n")
    log = open(tmp_path / "watch.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "builders", "watch", "--run-dir", str(run), "--repository", str(repository),
         "--work-dir", str(tmp_path / "builds"), "--config", str(config), "--interval", "0.5", "--quiet"],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for(lambda: versions(repository / "digits") == [1], 180, proc)

        # the trainer re-exports (a new best): same weights, new manifest -> passes the gate as version 2
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["created_at"] = "2030-01-01T00:00:00+00:00"
        (run / "manifest.json").write_text(json.dumps(manifest))
        _wait_for(lambda: versions(repository / "digits") == [1, 2], 180, proc)

        # a much worse checkpoint appears: the gate refuses it and the watch keeps going
        worse = train_run(tmp_path / "worse", "digits", DIGITS_ARCH, {}, steps=3)
        shutil.copy(worse / "model.safetensors", run / "model.safetensors")
        shutil.copy(worse / "manifest.json", run / "manifest.json")
        _wait_for(lambda: "promotion gate refused" in (tmp_path / "watch.log").read_text(), 180, proc)
        assert versions(repository / "digits") == [1, 2]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        log.close()
    output = (tmp_path / "watch.log").read_text()
    assert code == 0, output
    assert "watch stopped: 2 version(s) published from 3 manifest(s)" in output
