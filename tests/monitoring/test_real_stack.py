"""The issue's "verified for real" test: the real Prometheus scraping the real Triton under load.

One stack for the module. Quickly trained ``digits`` and ``textclf`` runs are built by the builders into a model
repository (digits, textclf, its tokenizer, labels and the ``textclf_text`` ensemble: the demo's models), next to
``faulty`` (tests/monitoring/model_repository: fails on purpose, and has no budget in slo.toml). Triton 2.51 (CPU)
serves them; this process puts load on digits, textclf_text and faulty with tritonclient and exposes the client
latency histogram of clients/metrics.py and the training sidecar's metrics (training/telemetry.py); the real NVML
exporter runs (and finds no GPU); a dcgm-exporter target points at a closed port (a missing exporter). Prometheus
scrapes all of it every second with the committed rules. Then every recording rule, alert expression and dashboard
query is evaluated through the HTTP API: each must parse and return data, except the ones listed in the
``EXPECTED_EMPTY`` tables, each with the reason it is empty on this machine.
"""
from __future__ import annotations

import json
import math
import shutil
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from prometheus_client import REGISTRY, start_http_server
from tritonclient.utils import InferenceServerException

from clients.metrics import REQUEST_DURATION
from clients.serve import ServerConfig, TritonServer
from common.net import free_port, wait_http_ok
from monitoring.alert_rules import all_alerts
from monitoring.dashboards import panel_queries
from monitoring.generate import MONITORING_DIR
from monitoring.local_prometheus import LocalPrometheus, LocalPrometheusConfig
from monitoring.panels import ALL_MODELS, MODEL_VARIABLE, dashboards
from monitoring.prom_api import PrometheusAPI, finite
from monitoring.recording_rules import recording_groups
from monitoring.slo import load_slo
from training.telemetry import TrainingMetrics
from tests.monitoring.conftest import MODEL_REPOSITORY, assert_one_line_error, run_monitoring_cli, start_monitoring_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_prometheus")]

MODEL = "digits"
TEXT_MODEL = "textclf_text"
FAULTY = "faulty"
LOAD_SECONDS = 15
FAIL_EVERY = 20         # faulty: a negative pixel fails the batch inside the model (Triton counts failures)
REJECT_EVERY = 97       # digits: a wrong shape, rejected before the model (only the client sees an error)
MESSAGES = ["my invoice was charged twice this month", "the app crashes when I open settings",
            "how do I reset my password", "please cancel my subscription"]

NO_GPU = "no GPU on this machine: dcgm-exporter is down, the NVML exporter reports 0 GPUs, Triton exports no nv_gpu_*"
EXPECTED_EMPTY_RECORDINGS = {
    "gpu:utilization:ratio": NO_GPU,
    "gpu:memory_used:ratio": NO_GPU,
    "gpu:power_usage:watts": NO_GPU,
    "gpu:temperature:celsius": NO_GPU,
    "model:client_retries:rate": "no call was retried (retries follow connection failures, which this load avoids)",
}
EXPECTED_EMPTY_SIGNALS = {
    "GPUMemoryHigh": NO_GPU,
}
EXPECTED_EMPTY_PANELS = {
    "gpu_utilization": NO_GPU, "gpu_memory": NO_GPU, "gpu_power": NO_GPU, "gpu_temperature": NO_GPU,
    "client_retries": EXPECTED_EMPTY_RECORDINGS["model:client_retries:rate"],
    "alerts_firing": "no alert has held its condition for its `for` duration (the shortest is 1m) during the test",
}


@dataclass
class Stack:
    api: PrometheusAPI
    triton: TritonServer
    start: float
    end: float
    dcgm_address: str
    counts: dict[str, dict[str, int]]      # model -> requests, failures (as the clients saw them)


def _request(model: str, n: int, rng) -> list:
    """Request ``n`` of a worker's stream for ``model``: mostly valid, with the planned failures mixed in."""
    if model == TEXT_MODEL:
        text = np.array([[MESSAGES[n % len(MESSAGES)].encode()]], dtype=object)
        tensor = httpclient.InferInput("text", [1, 1], "BYTES")
        tensor.set_data_from_numpy(text)
        return [tensor]
    image = rng.uniform(0, 16, size=(1, 1, 8, 8)).astype(np.float32)
    if model == FAULTY and n % FAIL_EVERY == 0:
        image[0, 0, 0, 0] = -1
    if model == MODEL and n % REJECT_EVERY == 0:
        image = image[:, :, :, :7].copy()
    tensor = httpclient.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    return [tensor]


def _load(url: str, model: str, stop_at: float, counts: dict, lock: threading.Lock) -> None:
    client = httpclient.InferenceServerClient(url, network_timeout=30)
    rng = np.random.default_rng(zlib.crc32(model.encode()))
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        inputs = _request(model, n, rng)
        began = time.perf_counter()
        try:
            client.infer(model, inputs)
            ok = True
        except InferenceServerException:
            ok = False
        REQUEST_DURATION.labels(model=model, protocol="http", outcome="ok" if ok else "error").observe(
            time.perf_counter() - began)
        with lock:
            counts.setdefault(model, {"requests": 0, "failures": 0})
            counts[model]["requests"] += 1
            counts[model]["failures"] += 0 if ok else 1
    client.close()


def _build_repository(root, lean_repository) -> None:
    """What the builders publish for quickly trained digits and textclf runs (the session's shared build, copied),
    plus a model that fails on purpose."""
    shutil.copytree(lean_repository, root / "model_repository", symlinks=True)
    shutil.copytree(MODEL_REPOSITORY / FAULTY, root / "model_repository" / FAULTY,
                    ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, lean_repository):
    tmp = tmp_path_factory.mktemp("stack")
    _build_repository(tmp, lean_repository)
    client_port, trainer_port, gpu_port, dcgm_port = free_port(), free_port(), free_port(), free_port()
    client_http, _ = start_http_server(client_port, addr="127.0.0.1", registry=REGISTRY)
    trainer = TrainingMetrics(MODEL, trainer_port, host="127.0.0.1")      # the training sidecar's own metrics
    gpu_exporter = start_monitoring_cli("gpu-exporter", "--port", str(gpu_port))
    config = ServerConfig(repository=tmp / "model_repository", http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=tmp / "triton.log", exit_timeout_s=1, ready_timeout_s=120)
    dcgm = f"127.0.0.1:{dcgm_port}"
    try:
        assert wait_http_ok(f"http://127.0.0.1:{gpu_port}/metrics", timeout=30), "gpu-exporter did not start"
        with TritonServer(config) as triton, LocalPrometheus(LocalPrometheusConfig(
                targets={"triton": [f"127.0.0.1:{config.metrics_port}"], "clients": [f"127.0.0.1:{client_port}"],
                         "trainer": [f"127.0.0.1:{trainer_port}"], "gpu-exporter": [f"127.0.0.1:{gpu_port}"],
                         "dcgm-exporter": [dcgm]},
                port=free_port(), scrape_interval="1s", evaluation_interval="1s")) as prom:
            start = time.time()
            counts, lock = {}, threading.Lock()
            stop_at = time.monotonic() + LOAD_SECONDS
            models = (MODEL, TEXT_MODEL, FAULTY)
            with ThreadPoolExecutor(len(models)) as pool:
                workers = [pool.submit(_load, triton.http_url, m, stop_at, counts, lock) for m in models]
                step = 0
                trainer.running.set(1)
                while time.monotonic() < stop_at:          # a training run progressing next to the serving load
                    step += 50
                    trainer.step.set(step)
                    trainer.epoch.set(step // 500)
                    trainer.loss.set(2.3 * math.exp(-step / 400))
                    trainer.val_loss.set(2.5 * math.exp(-step / 450))
                    trainer.accuracy.set(1 - math.exp(-step / 300))
                    trainer.samples_per_second.set(1200)
                    if step % 200 == 0:
                        trainer.checkpoint_written()
                    time.sleep(1)
                for worker in workers:
                    worker.result()
            api = prom.api
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                    [s for s in api.query('model:inference_request_latency_seconds{source="client"}') if finite(s)]
                    and [s for s in api.query('model:inference_request_latency_seconds{source="triton"}')
                         if finite(s)]):
                time.sleep(0.5)
            yield Stack(api, triton, start, time.time(), dcgm, counts)
    finally:
        gpu_exporter.terminate()
        gpu_exporter.wait(timeout=15)
        client_http.shutdown()
        trainer.close()


def _with_data(api: PrometheusAPI, expr: str) -> list:
    return [s for s in api.query(expr) if finite(s)]


def test_load_reached_triton(stack):
    for model in (MODEL, TEXT_MODEL, FAULTY):
        assert stack.counts[model]["requests"] > 30, stack.counts
    assert stack.counts[TEXT_MODEL]["failures"] == 0, stack.counts
    assert 0 < stack.counts[MODEL]["failures"] < stack.counts[MODEL]["requests"] / 20, stack.counts
    assert 0 < stack.counts[FAULTY]["failures"] < stack.counts[FAULTY]["requests"] / 4, stack.counts


def test_every_rule_is_loaded_and_healthy(stack):
    slo = load_slo()
    loaded = stack.api.rules()
    expected = sum(len(g.rules) for g in recording_groups(slo)) + len(all_alerts(slo))
    assert len(loaded) == expected
    unhealthy = [(r.get("name"), r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not unhealthy


def test_every_recording_rule_parses_and_returns_data(stack):
    empty = []
    for group in recording_groups(load_slo()):
        for rule in group.rules:
            result = _with_data(stack.api, rule.expr)          # raises QueryError on a parse error
            selector = rule.record + "{" + ",".join(f'{k}="{v}"' for k, v in rule.labels.items()) + "}"
            recorded = _with_data(stack.api, selector)
            reason = EXPECTED_EMPTY_RECORDINGS.get(rule.record)
            if reason:
                empty.append((selector, reason))
                continue
            assert result, f"recording rule {selector} returned no data:\n{rule.expr}"
            assert recorded, f"Prometheus recorded no {selector}"
    print("empty on this machine, as expected:\n" + "\n".join(f"  {s}: {why}" for s, why in empty))


def test_every_alert_expression_parses_and_watches_real_series(stack):
    api = stack.api
    alerts = all_alerts(load_slo())
    for alert in alerts:
        api.query(alert.expr)                                   # parses and evaluates
        signal = _with_data(api, alert.signal)
        if alert.alert in EXPECTED_EMPTY_SIGNALS:
            assert not signal, f"{alert.alert}: expected no data ({EXPECTED_EMPTY_SIGNALS[alert.alert]})"
        else:
            assert signal, f"{alert.alert}: its signal {alert.signal!r} has no data"
    not_ready = {a.extra_labels["model"]: api.query(a.expr) for a in alerts if a.alert == "ModelNotReady"}
    assert set(not_ready) >= {MODEL, TEXT_MODEL, "textclf"}
    assert not any(not_ready.values()), f"every required model is served, yet ModelNotReady holds: {not_ready}"
    down_jobs = {s.labels["job"] for a in alerts if a.alert == "ScrapeTargetDown" for s in api.query(a.expr)}
    assert down_jobs == {"dcgm-exporter"}, down_jobs
    errors = next(a for a in alerts if a.alert == "InferenceErrorRatioHigh")
    failing = {(s.labels["model"], s.labels["source"]) for s in api.query(errors.expr)}
    assert {(FAULTY, "triton"), (FAULTY, "client")} <= failing, f"1 in {FAIL_EVERY} faulty requests fail: {failing}"
    assert (MODEL, "triton") not in failing and (TEXT_MODEL, "triton") not in failing, failing


def test_a_model_without_a_budget_gets_the_default(stack):
    slo = load_slo()
    budgets = {s.labels["model"]: s.values[0] for s in _with_data(stack.api, "model:slo_request_latency_p99_seconds")}
    assert budgets[FAULTY] == slo.latency.default_p99_seconds
    assert budgets[MODEL] == slo.models[MODEL].p99_latency_seconds


def test_every_dashboard_query_parses_and_returns_data(stack):
    by_title = {p.title: p for spec in dashboards(load_slo()) for p in spec.panels}
    checked = 0
    for spec in dashboards(load_slo()):
        board = json.loads((MONITORING_DIR / f"grafana/dashboards/{spec.uid}.json").read_text())
        for title, expr in panel_queries(board):
            panel = by_title[title]
            result = _with_data(stack.api, expr.replace(MODEL_VARIABLE, ALL_MODELS))
            checked += 1
            if panel.key in EXPECTED_EMPTY_PANELS:
                continue
            assert result, f"panel {title!r}: {expr} returned no data"
    assert checked == sum(len(p.queries) for spec in dashboards(load_slo()) for p in spec.panels)


def test_percentiles_are_ordered_and_sources_agree(stack):
    api = stack.api

    def latency(source: str, quantile: str) -> float:
        [series] = _with_data(api, f'model:inference_request_latency_seconds{{model="{MODEL}",source="{source}",'
                                   f'quantile="{quantile}"}}')
        return series.values[0]

    for source in ("client", "triton"):
        p50, p95, p99 = (latency(source, q) for q in ("0.5", "0.95", "0.99"))
        assert 0 < p50 <= p95 <= p99 < 10, (source, p50, p95, p99)
    [per_server] = _with_data(api, f'instance_model:inference_request_latency_seconds{{model="{MODEL}",'
                                   'quantile="0.99"}')
    assert per_server.values[0] == pytest.approx(latency("triton", "0.99"))   # one server: max over one
    rates = {s.labels["source"]: s.values[0]
             for s in _with_data(api, f'model:inference_requests:rate{{model="{MODEL}"}}')}
    assert set(rates) == {"client", "triton"}
    assert 0.5 < rates["triton"] / rates["client"] < 2, rates


def test_png_panels_show_latency_and_throughput_and_name_the_missing_exporter(stack, tmp_path):
    import matplotlib.image

    out = tmp_path / "panels"
    result = run_monitoring_cli("panels", "--prometheus", stack.api.url, "--start", f"{stack.start:.0f}",
                                "--end", f"{stack.end:.0f}", "--out", str(out), "--expect", "triton")
    assert result.returncode == 0, result.stderr
    assert f"warning: target dcgm-exporter at {stack.dcgm_address} is down" in result.stdout
    summary = {p["key"]: p for p in json.loads((out / "panels.json").read_text())["panels"]}
    assert {MODEL, TEXT_MODEL, FAULTY} <= set(summary["latency"]["models"])
    assert summary["latency"]["series"] >= 3 * 6        # 3 quantiles x 2 sources for each loaded model
    assert summary["request_rate"]["series"] >= 2 and summary["request_rate"]["no_data_reason"] is None
    for key in ("error_ratio", "queue_vs_compute", "batch_size", "cpu", "training_loss", "training_step"):
        assert summary[key]["no_data_reason"] is None, (key, summary[key])
    for key in ("gpu_utilization", "gpu_memory", "gpu_power"):
        reason = summary[key]["no_data_reason"]
        assert reason and f"target dcgm-exporter at {stack.dcgm_address} is down" in reason, (key, reason)
        assert "no GPU" in reason, (key, reason)
    for name in ("latency.png", "request_rate.png", "overview.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert float(np.std(image[..., :3])) > 0.05, f"{name} looks blank"
    window = ["--prometheus", stack.api.url, "--start", f"{stack.start:.0f}", "--end", f"{stack.end:.0f}"]
    assert_one_line_error(run_monitoring_cli("panels", *window, "--step", "-1", "--out", str(out)),
                          "--step -1: expected a positive number of seconds")
    # more points than Prometheus returns: every query fails, which must not read as "no data" with exit status 0
    assert_one_line_error(run_monitoring_cli("panels", *window, "--step", "0.001", "--out", str(out)),
                          "every query failed", "exceeded maximum resolution")


def test_targets_command_sees_every_job(stack):
    result = run_monitoring_cli("targets", "--prometheus", stack.api.url)
    assert result.returncode == 2
    for job in ("triton", "clients", "trainer", "gpu-exporter", "prometheus"):
        assert any(line.split()[:1] == [job] and line.split()[-1] == "up" for line in result.stdout.splitlines()), job
    assert "dcgm-exporter" in result.stderr and "down" in result.stderr


def test_triton_metrics_endpoint_has_the_names_the_rules_read(stack):
    """The rules' inputs, checked against the live server rather than a list in a document."""
    text = requests.get(stack.triton.metrics_url, timeout=5).text
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                 "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
                 "nv_inference_request_summary_us", "nv_cpu_utilization", "nv_cpu_memory_used_bytes"):
        assert f"\n{name}" in text, name
    assert 'quantile="0.99"' in text and "nv_gpu_" not in text
    assert 'reason="BACKEND"' in text
