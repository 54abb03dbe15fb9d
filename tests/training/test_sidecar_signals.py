"""Sidecar mode and stop signals: metrics over Prometheus, new data folded in, SIGTERM never corrupts anything."""
from __future__ import annotations

import json
import re
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.net import free_port
from tests.training.conftest import start_training, stop_process, wait_for
from training.checkpoint import CheckpointStore

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, dict]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name: {"labels": s.labels, "value": s.value}
            for family in text_string_to_metric_families(text) for s in family.samples}


def digit_records(count: int) -> str:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return "".join(json.dumps({"image": bunch.images[i].tolist(), "label": int(bunch.target[i])}) + "\n"
                   for i in range(count))


def test_sidecar_exports_serves_metrics_takes_new_data_and_stops_cleanly(tmp_path):
    run_dir, watch, log, port = tmp_path / "run", tmp_path / "incoming", tmp_path / "sidecar.log", free_port()
    watch.mkdir()
    args = ["--sidecar", "--model", "digits", "--seed", "1", "--threads", "1", "--progress", "off",
            "--max-train-samples", "320", "--epochs", "2", "--epochs-per-round", "1", "--watch-dir", str(watch),
            "--poll-seconds", "0.3", "--metrics-port", str(port), "--run-dir", str(run_dir)]
    proc = start_training(*args, log=log)
    try:
        wait_for(lambda: "idle: watching" in log.read_text(), 180, "the first round to finish", proc, log)
        metrics = scrape(port)
        for name in ("training_loss", "training_accuracy", "training_step", "training_epoch",
                     "training_samples_per_second", "training_seconds_since_checkpoint",
                     "training_last_checkpoint_timestamp_seconds", "training_learning_rate", "training_running"):
            assert metrics[name]["labels"] == {"model": "digits"}, name
        assert metrics["training_epoch"]["value"] == 2 and metrics["training_step"]["value"] == 10
        assert metrics["training_running"]["value"] == 0 and 0 < metrics["training_accuracy"]["value"] <= 1
        assert metrics["training_last_checkpoint_timestamp_seconds"]["value"] > 1.7e9
        first_export = json.loads((run_dir / "manifest.json").read_text())
        assert "test_accuracy" in first_export["metrics"]

        (watch / "broken.jsonl").write_text('{"image": [[1, 2]], "label": 3}\n')
        (watch / ".new.jsonl").write_text(digit_records(64))
        (watch / ".new.jsonl").rename(watch / "new.jsonl")  # producers publish atomically
        wait_for(lambda: log.read_text().count("idle: watching") >= 2, 180, "the second round", proc, log)
        text = log.read_text()
        assert "warning: rejected new data" in text and "broken.jsonl" in text and "record 0" in text
        assert "folded in 64 new records" in text and "epoch 3/3" in text
        assert scrape(port)["training_epoch"]["value"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop_process(proc)
    assert "stopped by SIGTERM while idle" in log.read_text()
    latest = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest().payload
    assert [entry["records"] for entry in latest["incoming"]] == [64]
    assert (run_dir / latest["incoming"][0]["file"]).read_text() == digit_records(64)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["training"]["incoming_data"] == [latest["incoming"][0]["file"]]


def test_sigterm_mid_run_checkpoints_the_current_step(tmp_path, digits_quick):
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    args = [*digits_quick, "--epochs", "40", "--run-dir", str(run_dir)]
    proc = start_training(*args, log=log)
    try:
        wait_for(lambda: list((run_dir / "checkpoints").glob("*.sha256")) if (run_dir / "checkpoints").is_dir() else [],
                 180, "the first checkpoint", proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        stop_process(proc)
    match = re.search(r"stopped by SIGTERM at step (\d+)", log.read_text())
    assert match, log.read_text()[-2000:]
    latest = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest()
    assert latest.payload["step"] == int(match.group(1)) and not latest.payload["finished"]
    assert "re-run the same command to resume" in log.read_text()


def test_metrics_port_in_use_is_a_clear_error():
    import socket

    from common.errors import UserError
    from training.telemetry import TrainingMetrics

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"metrics port {port} is already in use"):
            TrainingMetrics("digits", port, "127.0.0.1")
