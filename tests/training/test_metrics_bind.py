"""Training metrics bind 127.0.0.1 unless told otherwise (issue 17, item 13): ``--metrics-port N`` alone must not
listen on every interface."""
from __future__ import annotations

import urllib.request

from common.net import free_port
from training.cli import build_parser, load, overrides_from
from training.telemetry import TrainingMetrics


def test_metrics_port_alone_binds_loopback():
    args = build_parser().parse_args(["--model", "digits", "--run-dir", "unused", "--metrics-port", "9402"])
    config = load(args)
    assert config.metrics.port == 9402 and config.metrics.host == "127.0.0.1"
    assert overrides_from(build_parser().parse_args(
        ["--model", "digits", "--run-dir", "unused", "--metrics-host", "0.0.0.0"]))["metrics.host"] == "0.0.0.0"


def test_the_metrics_server_listens_on_loopback_only_by_default():
    port = free_port()
    metrics = TrainingMetrics("digits", port)
    try:
        assert metrics.server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"training_running" in response.read()
    finally:
        metrics.close()
