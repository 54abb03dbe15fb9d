"""Watch mode follows a training run: each new manifest is built through the gate; Ctrl-C stops it cleanly."""
from __future__ import annotations

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


def reexport_nudged(run: Path) -> None:
    """What the trainer does on a new best checkpoint: new weights (here: nudged by 1e-6), new manifest."""
    import torch

    from training.export import export_weights, load_exported

    exported = load_exported(run)
    with torch.no_grad():
        next(exported.model.parameters()).add_(1e-6)
    manifest = exported.manifest
    export_weights(run, exported.spec, exported.arch, exported.data, exported.model, exported.load_splits(),
                   manifest.metrics, manifest.training, manifest.parent_checkpoint)


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

        # the trainer exports a new best of the same quality (weights nudged by 1e-6) -> version 2
        reexport_nudged(run)
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
