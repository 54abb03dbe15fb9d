"""``python -m benchmarks loadtest`` against the real Triton serving a built model: a short gated run at modest
load passes, an impossible p99 budget fails with exit status 3, and a server that is down or a model that does not
exist stops the run at once with a clear message (this is the gated run CI performs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.serve import ServerConfig, TritonServer
from common.net import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(lean_repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("loadtest") / "triton.log"
    config = ServerConfig(repository=lean_repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=log)
    with TritonServer(config) as server:
        yield server


def loadtest(server, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks", "loadtest", "--http-port", str(server.config.http_port),
               "--grpc-port", str(server.config.grpc_port), "--results-dir", str(tmp_path), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("protocol,model", [("grpc", "digits"), ("http", "textclf_text")])
def test_a_gated_run_at_modest_load_passes_and_writes_its_results(served, tmp_path, protocol, model):
    result = loadtest(served, tmp_path, "--model", model, "--protocol", protocol, "--users", "4", "--duration", "6",
                      "--max-p99-ms", "2000", "--max-error-rate", "0.01", "--name", "gated")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SLO gate passed" in result.stdout
    document = json.loads((tmp_path / "gated.json").read_text())
    row = document["result"]
    assert row["requests"] > 50 and row["errors"] == 0 and row["throughput_rps"] > 0
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert row["cpu_cores"]["load_generator"] > 0 and row["server_side"]["requests"] > 0
    assert document["gate"]["passed"] and document["machine"]["cpu_cores"]
    assert (tmp_path / "gated.png").stat().st_size > 10_000
    side = row["server_side"]
    if model == "textclf_text":  # an ensemble: its own batch means nothing, its steps show where the time goes
        assert side["avg_batch_size"] is None and "sum of steps" in result.stdout
        assert [step["model"] for step in side["steps"]] == ["textclf_tokenizer", "textclf", "textclf_labels"]
        assert all(step["requests"] >= side["requests"] and step["avg_batch_size"] >= 1 for step in side["steps"])
        assert "step textclf: queue" in result.stdout
    else:
        assert side["avg_batch_size"] >= 1 and "steps" not in side


def test_an_impossible_p99_budget_fails_the_gate_with_exit_status_3(served, tmp_path):
    result = loadtest(served, tmp_path, "--model", "digits", "--users", "2", "--duration", "4", "--max-p99-ms", "0.001")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "error: SLO gate failed: p99" in result.stderr and "exceeds the budget of 0.001 ms" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_model_or_a_server_that_is_down_stops_at_once(served, tmp_path):
    result = loadtest(served, tmp_path, "--model", "no_such_model", "--duration", "60")
    assert result.returncode == 2 and "model 'no_such_model' is not ready" in result.stderr
    assert "models there:" in result.stderr and "digits" in result.stderr
    down = subprocess.run([sys.executable, "-m", "benchmarks", "loadtest", "--http-port", str(free_port()),
                           "--duration", "60"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "cannot reach Triton at http://127.0.0.1:" in down.stderr
    assert "Traceback" not in down.stderr


@pytest.mark.parametrize("target,concurrency", [("triton-grpc", 1), ("triton-grpc", 4), ("triton-http", 1),
                                                ("triton-http", 4), ("triton-http-json", 2)])
def test_the_comparison_load_generator_drives_every_triton_target(served, tmp_path, target, concurrency):
    from benchmarks.loadgen import LoadSpec
    from benchmarks.payloads import make_payloads, model_inputs, save_payloads

    inputs, _ = model_inputs(served.http_url, "digits")
    save_payloads(tmp_path / "p.npz", make_payloads("digits", inputs, 16))
    url = served.grpc_url if target == "triton-grpc" else served.http_url

    def run(model: str) -> dict:
        spec = LoadSpec(target=target, url=url, model=model, payload_file=str(tmp_path / "p.npz"),
                        concurrency=concurrency, duration_s=1.5, warmup_s=0.3)
        (tmp_path / "spec.json").write_text(spec.model_dump_json())
        out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", str(tmp_path / "spec.json")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    good = run("digits")
    assert good["errors"] == {} and len(good["latencies_ms"]) > 10 and good["throughput_rps"] > 0
    assert 0 < min(good["latencies_ms"]) and good["cpu_cores"] > 0
    bad = run("no_such_model")  # every failure is counted by kind; the run itself completes
    assert not bad["latencies_ms"] and sum(bad["errors"].values()) > 0
