"""``python -m demo`` (what ``make demo`` runs) with a tiny configuration: the whole path works, a second run resumes
instead of redoing, and Ctrl-C half-way leaves no ``tritonserver`` behind."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from common.net import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def tiny_config(tmp_path: Path) -> Path:
    config = tmp_path / "demo.toml"
    config.write_text(f"""
repository = "{tmp_path / 'model_repository'}"
http_port = {free_port()}
grpc_port = {free_port()}
metrics_port = {free_port()}
prometheus_port = {free_port()}
client_metrics_port = {free_port()}
queries = 4
work_dir = "{tmp_path / 'work'}"
results_dir = "{tmp_path / 'results'}"

[[train]]
model = "digits"
run_dir = "{tmp_path / 'runs' / 'digits'}"
epochs = 2

[load]
model = "digits"
protocol = "grpc"
users = 4
duration_s = 20
""")
    return config


def tritonservers_below(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "tritonserver"]
    except psutil.NoSuchProcess:
        return []


def test_the_demo_runs_end_to_end_then_resumes_and_ctrl_c_leaves_no_server(tmp_path):
    config = tiny_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "demo", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "ready: triton 2.51.0" in out and "HTTP and gRPC agree with PyTorch on all 4 examples" in out
    assert "[loadtest] SLO gate passed" in out and "Triton and Prometheus stopped" in out
    report = (tmp_path / "results" / "demo-report.md").read_text()
    assert "| image #0 |" in report and "## Load test (Locust)" in report and "demo-panels/overview.png" in report
    load = json.loads((tmp_path / "results" / "demo-loadtest-digits-grpc.json").read_text())["result"]
    assert load["requests"] > 0 and load["errors"] == 0
    panels = json.loads((tmp_path / "results" / "demo-panels" / "panels.json").read_text())
    assert panels, "the Prometheus panels were rendered"
    # the request-rate panel's steady state agrees with what Locust measured (the rate window fits the run)
    agreement = json.loads((tmp_path / "results" / "demo-panels" / "agreement.json").read_text())
    assert agreement["points"] >= 3, agreement
    assert abs(agreement["ratio"] - 1) <= 0.10, agreement

    # a second run confirms the finished training run and publishes nothing new; interrupt it once Triton is up
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    servers = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ready: triton"):
            servers = tritonservers_below(proc.pid)
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
        assert time.monotonic() < deadline, "the demo did not reach the serving step"
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert servers, "Triton was running when the demo was interrupted"
    assert proc.returncode == 130 and "interrupted" in output
    _, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive, "a tritonserver outlived the interrupted demo"
    assert "unchanged: version 1" in output, "the second build must not publish a copy of the same weights"
    assert "trained 2 of 2 epochs" in output or "already" in output.lower()
