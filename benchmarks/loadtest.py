"""``python -m benchmarks loadtest``: a headless Locust run against Triton, with an SLO gate.

Checks the server and model first (a server that is down or a model that does not exist stops the run at once),
prepares payloads from real data, runs Locust (one process, or master + ``--workers N`` processes when one process
saturates a core), prints a progress line, and writes under benchmarks/results/:

* ``<name>.json``: throughput, p50/p95/p99, errors (how many and which), CPU cores used by the server and by the
  load generator, Triton's server-side breakdown (queue vs compute), the settings and the machine;
* ``<name>.png``: requests/s and latency percentiles over time;
* ``locust/<name>_*.csv``: Locust's own statistics.

With ``--max-p99-ms`` and/or ``--max-error-rate`` the run is an SLO gate: it exits with status 3 when a budget is
exceeded, saying which.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from benchmarks import RESULTS_DIR
from benchmarks.cpu_usage import CpuMeter, children_cpu_seconds, listening_pid
from benchmarks.load_settings import LoadSettings
from benchmarks.machine import machine_facts
from benchmarks.payloads import embedding_output_of, make_payloads, model_inputs, save_payloads
from benchmarks.triton_stats import StatsWindow, format_step
from common.config import load_config
from common.errors import GateFailure, UserError
from common.files import atomic_write_json
from common.net import free_port
from common.processes import stop as stop_process
from common.plots import save_png

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


class GateBudgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_p99_ms: float | None = Field(None, gt=0, description="fail when p99 latency exceeds this many ms")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="fail when failed/total exceeds this fraction")


class LoadtestOptions(BaseModel):
    """Everything a load test run needs besides the Locust settings (loadable from TOML with --config)."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1, le=64, description="Locust worker processes (1 = a single standalone process)")
    payloads: int = Field(512, ge=1)
    seq_len: int | None = Field(None, ge=1, description="fixed sequence length for token inputs (natural lengths if unset)")
    run_dir: Path | None = Field(None, description="training run directory (its tokenizer makes realistic inputs)")
    payload_source: str | None = Field(None, description="digits | textclf | textclf_text | synthetic (default: the model name)")
    name: str | None = None
    results_dir: Path = RESULTS_DIR
    gate: GateBudgets = GateBudgets()
    settings: dict[str, Any] = Field(default_factory=dict, description="LoadSettings fields (users, shape, protocol, ...)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML/YAML with LoadtestOptions fields; flags override it")
    target = parser.add_argument_group("target")
    target.add_argument("--host", help="Triton host (default 127.0.0.1)")
    target.add_argument("--http-port", type=int, help="Triton HTTP port (default 8000)")
    target.add_argument("--grpc-port", type=int, help="Triton gRPC port (default 8001)")
    target.add_argument("--protocol", choices=["http", "grpc"], help="wire protocol (default grpc)")
    target.add_argument("--http-encoding", choices=["binary", "json"], help="tensor encoding over HTTP (default binary)")
    target.add_argument("--model", help="model to load (default digits)")
    target.add_argument("--model-version", help="model version (default: the server's policy)")
    target.add_argument("--timeout", type=float, dest="request_timeout_s", help="per-request timeout in seconds (default 10)")
    load = parser.add_argument_group("load")
    load.add_argument("--users", type=int, help="concurrent users (default 16)")
    load.add_argument("--spawn-rate", type=float, help="users started per second (default 16)")
    load.add_argument("--duration", type=float, dest="duration_s", help="seconds of load (default 20)")
    load.add_argument("--shape", choices=["constant", "step", "ramp"], help="load shape (default constant)")
    load.add_argument("--step-users", type=int, help="step shape: users added per step (default 8)")
    load.add_argument("--step-duration", type=float, dest="step_duration_s", help="step shape: seconds per step (default 10)")
    load.add_argument("--arrival", choices=["closed", "poisson"], help="closed loop, or Poisson arrivals per user (default closed)")
    load.add_argument("--rate-per-user", type=float, help="poisson arrivals: mean requests/s per user (default 10)")
    load.add_argument("--workers", type=int, help="Locust worker processes; >1 runs master/worker mode (default 1)")
    load.add_argument("--client-metrics-port", type=int, help="serve client latency histograms for Prometheus on this port (default off)")
    data = parser.add_argument_group("payloads")
    data.add_argument("--payloads", type=int, help="distinct requests to cycle through (default 512)")
    data.add_argument("--seq-len", type=int, help="fixed sequence length for token inputs (default: natural lengths)")
    data.add_argument("--run-dir", help="training run directory, for realistic text/token inputs")
    data.add_argument("--payload-source", help="digits | textclf | textclf_text | synthetic (default: the model name)")
    gate = parser.add_argument_group("SLO gate (exit status 3 when exceeded)")
    gate.add_argument("--max-p99-ms", type=float, help="p99 latency budget in milliseconds")
    gate.add_argument("--max-error-rate", type=float, help="error budget as a fraction of requests (0.01 = 1 %%)")
    out = parser.add_argument_group("output")
    out.add_argument("--name", help="results file name (default loadtest-<model>-<protocol>)")
    out.add_argument("--results-dir", help="where results go (default benchmarks/results)")


_SETTING_FLAGS = ("host", "http_port", "grpc_port", "protocol", "http_encoding", "model", "model_version",
                  "request_timeout_s", "users", "spawn_rate", "duration_s", "shape", "step_users", "step_duration_s",
                  "arrival", "rate_per_user", "client_metrics_port")


def options_from_args(args: argparse.Namespace) -> LoadtestOptions:
    overrides: dict[str, Any] = {f"settings.{k}": getattr(args, k, None) for k in _SETTING_FLAGS}
    overrides.update({k: getattr(args, k, None) for k in ("workers", "payloads", "seq_len", "run_dir",
                                                           "payload_source", "name", "results_dir")})
    overrides.update({"gate.max_p99_ms": getattr(args, "max_p99_ms", None),
                      "gate.max_error_rate": getattr(args, "max_error_rate", None)})
    return load_config(LoadtestOptions, getattr(args, "config", None), overrides)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def _aggregated(rows: list[dict[str, str]]) -> dict[str, str] | None:
    for row in reversed(rows):
        if row.get("Name") == "Aggregated":
            return row
    return None


class _Progress:
    """One line every few seconds: configuration, elapsed, users, current requests/s and p99."""

    def __init__(self, label: str, duration_s: float, history: Path, every_s: float = 5.0):
        self.label, self.duration_s, self.history, self.every_s = label, duration_s, history, every_s
        self.t0 = time.monotonic()
        self.last = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        row = _aggregated(_read_csv(self.history))
        elapsed = now - self.t0
        if elapsed > self.duration_s + 2:
            print(f"[loadtest] {self.label}: finishing…", flush=True)
            self.every_s = 1e9
            return
        if row is None:
            print(f"[loadtest] {self.label}: {elapsed:4.0f}/{self.duration_s:.0f} s  starting…", flush=True)
            return
        print(f"[loadtest] {self.label}: {elapsed:4.0f}/{self.duration_s:.0f} s  users {row.get('User Count')}  "
              f"{_num(row.get('Requests/s')) or 0:7.1f} req/s  p99 {row.get('99%')} ms  "
              f"failures/s {_num(row.get('Failures/s')) or 0:.1f}", flush=True)


def _locust_commands(options: LoadtestOptions, settings: LoadSettings, prefix: Path) -> list[list[str]]:
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
    main = base + ["--headless", "--csv", str(prefix), "--csv-full-history", "--only-summary", "--stop-timeout", "5"]
    if settings.shape == "constant":
        main += ["-u", str(settings.users), "-r", str(settings.spawn_rate), "-t", f"{settings.duration_s:g}s"]
    if options.workers == 1:
        return [main]
    port = free_port()
    main += ["--master", "--expect-workers", str(options.workers), "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port)]
    worker = base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    return [main] + [worker] * options.workers


def _run_locust(options: LoadtestOptions, settings: LoadSettings, prefix: Path, label: str) -> tuple[int, Path]:
    """Run Locust to completion; its output goes to ``<prefix>.log`` (a pipe nobody reads would block it)."""
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    log_path = Path(f"{prefix}.log")
    progress = _Progress(label, settings.duration_s, Path(f"{prefix}_stats_history.csv"))
    deadline = time.monotonic() + settings.duration_s + 90
    with open(log_path, "w") as log:
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                 for cmd in _locust_commands(options, settings, prefix)]
        try:
            while procs[0].poll() is None:
                if time.monotonic() > deadline:
                    raise UserError(f"Locust did not finish within {settings.duration_s + 90:.0f} s; see {log_path}")
                progress.tick()
                time.sleep(0.5)
            for proc in procs[1:]:
                proc.wait(timeout=30)
        finally:
            for proc in procs:
                stop_process(proc, grace_s=10)
    return procs[0].returncode, log_path


def _request_counts(history: list[dict[str, str]]) -> list[list[float]]:
    """``[unix time, requests so far]`` from Locust's per-second history, for the seconds that counted requests: when
    the load really ran (Locust starts some seconds after the command), so a server-side figure can be compared with
    Locust's over exactly the same span."""
    counts = []
    for r in history:
        t, n = _num(r.get("Timestamp")), _num(r.get("Total Request Count"))
        if r.get("Name") == "Aggregated" and t is not None and n:
            counts.append([t, n])
    return counts


def _plot(history: list[dict[str, str]], path: Path, title: str) -> Path | None:
    rows = [r for r in history if r.get("Name") == "Aggregated"]
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = float(rows[0]["Timestamp"])
    t = [float(r["Timestamp"]) - t0 for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, [_num(r.get("Requests/s")) or 0 for r in rows], label="requests/s")
    ax1.plot(t, [_num(r.get("Failures/s")) or 0 for r in rows], label="failures/s", color="tab:red")
    users_axis = ax1.twinx()
    users_axis.plot(t, [_num(r.get("User Count")) or 0 for r in rows], color="gray", ls=":", label="users")
    users_axis.set_ylabel("users")
    ax1.set_ylabel("requests/s")
    ax1.legend(loc="upper left")
    for q, style in (("50%", "-"), ("95%", "--"), ("99%", "-.")):
        ax2.plot(t, [_num(r.get(q)) for r in rows], style, label=f"p{q[:-1]}")
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper left")
    ax1.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def check_gate(row: dict, gate: GateBudgets) -> list[str]:
    """The budgets a result exceeds (empty when it passes)."""
    problems = []
    if gate.max_p99_ms is not None:
        if row["p99_ms"] is None or row["requests"] == 0:
            problems.append("no successful requests, so p99 is undefined")
        elif row["p99_ms"] > gate.max_p99_ms:
            problems.append(f"p99 {row['p99_ms']:.1f} ms exceeds the budget of {gate.max_p99_ms:g} ms")
    if gate.max_error_rate is not None and row["error_rate"] > gate.max_error_rate:
        problems.append(f"error rate {row['error_rate']:.2%} ({row['errors']} of {row['requests']}) exceeds the budget "
                        f"of {gate.max_error_rate:.2%}")
    return problems


def run_loadtest(options: LoadtestOptions) -> dict:
    """Run one load test; returns the result row (also written to JSON)."""
    from common.config import validate

    settings_data = {"payload_file": "", **options.settings}
    settings = validate(LoadSettings, settings_data, "load settings")
    http_url = f"{settings.host}:{settings.http_port}"
    inputs, _max_batch = model_inputs(http_url, settings.model)  # stops at once on a missing server or model
    if not settings.embedding_output:
        found = embedding_output_of(http_url, settings.model)
        if found:  # an embedding model: the Locust user checks every answer is a unit vector of the right size
            settings = settings.model_copy(update={"embedding_output": found[0], "embedding_dims": found[1],
                                                   "outputs": [found[0]]})
    name = options.name or f"loadtest-{settings.model}-{settings.protocol}"
    results_dir = Path(options.results_dir)
    locust_dir = results_dir / "locust"
    locust_dir.mkdir(parents=True, exist_ok=True)
    payload_file = save_payloads(locust_dir / f"{name}-payloads.npz", make_payloads(
        settings.model, inputs, options.payloads, seq_len=options.seq_len, run_dir=options.run_dir,
        source=options.payload_source))
    settings = settings.model_copy(update={"payload_file": str(payload_file),
                                           "client_metrics_port_per_worker": options.workers > 1})
    prefix = locust_dir / name
    for stale in locust_dir.glob(f"{name}_*.csv"):
        stale.unlink()

    label = f"{settings.model}/{settings.protocol} {settings.shape} {settings.users} users"
    print(f"[loadtest] {label} for {settings.duration_s:g} s against {settings.host} "
          f"({options.workers} Locust process{'es' if options.workers > 1 else ''})", flush=True)
    server_pid = listening_pid(settings.grpc_port if settings.protocol == "grpc" else settings.http_port)
    meter = CpuMeter({"server": server_pid}).start()
    stats = StatsWindow(http_url, settings.model).start()
    cpu_before, t0 = children_cpu_seconds(), time.perf_counter()
    code, log_path = _run_locust(options, settings, prefix, label)
    wall = time.perf_counter() - t0
    load_cores = round((children_cpu_seconds() - cpu_before) / wall, 3)
    cores = meter.stop()
    server_side = stats.stop()

    total = _aggregated(_read_csv(Path(f"{prefix}_stats.csv")))
    if total is None:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise UserError(f"Locust produced no statistics (exit status {code}; log {log_path}); it ended with:\n{tail}")
    requests = int(_num(total.get("Request Count")) or 0)
    errors = int(_num(total.get("Failure Count")) or 0)
    failures = [{"error": r.get("Error"), "count": int(_num(r.get("Occurrences")) or 0)}
                for r in _read_csv(Path(f"{prefix}_failures.csv"))]
    # exceptions raised inside Locust tasks (a broken load generator) are not request failures, but void the run
    crashes = [{"error": r.get("Message"), "count": int(_num(r.get("Count")) or 0)}
               for r in _read_csv(Path(f"{prefix}_exceptions.csv"))]
    row = {
        "config": name,
        "model": settings.model,
        "protocol": settings.protocol if settings.protocol == "grpc" else f"http-{settings.http_encoding}",
        "concurrency": settings.users,
        "shape": settings.shape,
        "arrival": settings.arrival,
        "throughput_rps": round(_num(total.get("Requests/s")) or 0.0, 2),
        "p50_ms": _num(total.get("50%")),
        "p95_ms": _num(total.get("95%")),
        "p99_ms": _num(total.get("99%")),
        "mean_ms": round(_num(total.get("Average Response Time")) or 0.0, 2),
        "max_ms": _num(total.get("Max Response Time")),
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        "error_kinds": failures,
        "load_generator_exceptions": crashes,
        "cpu_cores": {"server": cores.get("server"), "load_generator": load_cores, "machine": cores.get("machine")},
        "server_side": server_side,
        "workers": options.workers,
        "duration_s": round(wall, 1),
    }
    history = _read_csv(Path(f"{prefix}_stats_history.csv"))
    row["request_counts"] = _request_counts(history)
    plot = _plot(history, results_dir / f"{name}.png",
                 f"{settings.model} over {row['protocol']}, {settings.shape} load, {settings.users} users")
    gate_problems = check_gate(row, options.gate)
    document = {"result": row, "gate": {**options.gate.model_dump(), "passed": not gate_problems,
                                        "problems": gate_problems},
                "settings": settings.model_dump(mode="json"), "machine": machine_facts(),
                "plot": str(plot) if plot else None}
    atomic_write_json(results_dir / f"{name}.json", document)
    if crashes:
        first = crashes[0]
        raise UserError(f"the load generator itself failed: {sum(c['count'] for c in crashes)} exceptions in Locust tasks, "
                        f"e.g. {first['error']!r} (log: {log_path}); the figures in {results_dir / (name + '.json')} are not valid")
    row["gate_problems"] = gate_problems
    row["results_file"] = str(results_dir / f"{name}.json")
    row["plot"] = str(plot) if plot else None
    return row


def print_summary(row: dict) -> None:
    print(f"[loadtest] {row['config']}: {row['throughput_rps']:.1f} req/s  p50 {row['p50_ms']} ms  "
          f"p95 {row['p95_ms']} ms  p99 {row['p99_ms']} ms  errors {row['errors']}/{row['requests']}", flush=True)
    for kind in row["error_kinds"]:
        print(f"[loadtest]   {kind['count']} × {kind['error']}", flush=True)
    cpu = row["cpu_cores"]
    print(f"[loadtest]   CPU cores used: server {cpu['server']}, load generator {cpu['load_generator']}, "
          f"machine {cpu['machine']}", flush=True)
    if row.get("server_side") and row["server_side"].get("requests"):
        s = row["server_side"]
        print(f"[loadtest]   inside Triton per request: queue {s['queue_ms']} ms, compute input {s['compute_input_ms']} ms, "
              f"infer {s['compute_infer_ms']} ms, output {s['compute_output_ms']} ms"
              + (f"; avg batch {s['avg_batch_size']}" if s.get("avg_batch_size") is not None else " (ensemble: sum of steps)"),
              flush=True)
        for step in s.get("steps", []):
            print(f"[loadtest]     step {format_step(step)}", flush=True)
    print(f"[loadtest]   results: {row['results_file']}" + (f", plot: {row['plot']}" if row.get("plot") else ""), flush=True)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    row = run_loadtest(options)
    print_summary(row)
    if row["gate_problems"]:
        raise GateFailure("SLO gate failed: " + "; ".join(row["gate_problems"]))
    if options.gate.max_p99_ms is not None or options.gate.max_error_rate is not None:
        print("[loadtest] SLO gate passed", flush=True)
    return 0
