"""``python -m demo``: train → build → serve → query → load test → report, on this CPU machine, on loopback only.

Each step runs the same command a user would run by hand (printed before it runs), so the demo doubles as a guide.
Re-running it resumes: finished training runs are confirmed in seconds, and the builders publish a new version only
when the gate passes. Ctrl-C (or SIGTERM) at any point stops Triton, Prometheus and any running step; no server
process is left behind.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from typing import Sequence

from common import system_packages
from common.config import load_config
from common import cli
from common.errors import UserError, run_cli
from common.processes import death_signal_for_this_thread
from common.processes import stop as stop_process
from demo.config import DEFAULT_CONFIG, ROOT, DemoConfig
from demo.panel_check import compare_with_locust, describe, rate_window_for
from demo.queries import query_models
from demo.report import write_report


def _interrupt(_signum, _frame) -> None:
    """SIGTERM and SIGINT stop the demo the way Ctrl-C does: every ``with`` block shuts its server down. SIGINT gets
    this handler too because a process started in the background by a shell inherits SIGINT ignored, and Python then
    leaves it ignored (the demo test's Ctrl-C did nothing when the suite ran from a background job)."""
    raise KeyboardInterrupt


def check_ports(config: DemoConfig) -> None:
    """Fail before minutes of training when a port the demo needs later is already taken."""
    from common.net import port_in_use

    ports = {"http_port": config.http_port, "grpc_port": config.grpc_port, "metrics_port": config.metrics_port,
             "prometheus_port": config.prometheus_port, "client_metrics_port": config.client_metrics_port}
    if len(set(ports.values())) != len(ports):
        raise UserError(f"the demo's ports must all differ (got {ports}); fix them in {DEFAULT_CONFIG.name}")
    for field, port in ports.items():
        if port_in_use(port):
            raise UserError(f"port {port} ({field} in demo/demo.toml) on 127.0.0.1 is already in use; stop what holds "
                            f"it (`ss -ltnp 'sport = :{port}'`) or choose another port in the demo's settings")


def banner(step: int, total: int, title: str) -> None:
    print(f"\n=== [{step}/{total}] {title}", flush=True)


def run_command(args: list[str], what: str) -> None:
    """Run one pipeline command as a child process; stop it if the demo is interrupted."""
    print("$ " + " ".join(args), flush=True)
    proc = subprocess.Popen([sys.executable, *args[1:]] if args[0] == "python" else args, cwd=ROOT,
                            preexec_fn=death_signal_for_this_thread())
    try:
        code = proc.wait()
    finally:
        stop_process(proc, grace_s=20)
    if code != 0:
        raise UserError(f"{what} failed (exit status {code}); the output above says why. Fix it and re-run `make demo` "
                        "(finished steps are resumed, not redone)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo settings (default demo/demo.toml)")
    parser.add_argument("--load-duration", type=float, help="seconds of Locust load (default from the config: 20)")


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.command_parser("python -m demo", __doc__, add_arguments).parse_args(argv)
    system_packages.ensure("demo")  # seconds, before any work: Prometheus is needed only at step 5
    config = load_config(DemoConfig, args.config, {"load.duration_s": args.load_duration})
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    check_ports(config)
    started = time.monotonic()
    total = 6
    timings: dict[str, float] = {}

    t = time.monotonic()
    banner(1, total, "train: a short, resumable training run per model")
    for step in config.train:
        command = ["python", "-m", "training", "--model", step.model, "--run-dir", str(step.run_dir),
                   "--seed", str(step.seed)]
        command += ["--config", str(step.config)] if step.config else []
        command += ["--epochs", str(step.epochs)] if step.epochs else []
        run_command(command + step.extra_args, f"training {step.model}")
    timings["train"] = time.monotonic() - t

    t = time.monotonic()
    banner(2, total, "build: ONNX + parity vs PyTorch + INT8 check + configs + gate -> a new version in the repository")
    for step in config.train:
        run_command(["python", "-m", "builders", "build", "--run-dir", str(step.run_dir), "--repository",
                     str(config.repository)], f"building {step.model}")
    if config.embedding:  # the third model: a real pretrained encoder from its Hugging Face folder
        from demo.embeddings import build_command

        run_command(build_command(config), f"building {config.embedding.name}")
    timings["build"] = time.monotonic() - t

    from clients.serve import ServerConfig, TritonServer, server_version
    from monitoring.local_prometheus import LocalPrometheus, LocalPrometheusConfig

    server = TritonServer(ServerConfig(repository=ROOT / config.repository, http_port=config.http_port,
                                       grpc_port=config.grpc_port, metrics_port=config.metrics_port,
                                       log_file=ROOT / config.work_dir / "triton.log"))
    t = time.monotonic()
    banner(3, total, "serve: the real Triton Inference Server on 127.0.0.1 (python backend running ONNX Runtime)")
    print(f"$ python -m clients serve --repository {config.repository}   (started from Python here)", flush=True)
    with server:
        version = server_version(server.http_url)
        print(f"ready: {version} | HTTP {server.http_url} | gRPC {server.grpc_url} | metrics {server.metrics_url}",
              flush=True)
        timings["serve"] = time.monotonic() - t

        t = time.monotonic()
        banner(4, total, "query: the same held-out inputs through PyTorch, HTTP and gRPC")
        queries = query_models(config, server)
        search = None
        if config.embedding:
            from demo.embeddings import semantic_search

            search = semantic_search(config, server)
        timings["query"] = time.monotonic() - t

        t = time.monotonic()
        banner(5, total, f"load test: Locust, {config.load.users} users for {config.load.duration_s:g} s on "
                         f"{config.load.model} over {config.load.protocol}, Prometheus watching")
        rate_window = rate_window_for(config.load.duration_s)
        prometheus = LocalPrometheus(LocalPrometheusConfig(
            targets={"triton": [f"127.0.0.1:{config.metrics_port}"],
                     "clients": [f"127.0.0.1:{config.client_metrics_port}"]},
            port=config.prometheus_port, rate_window=rate_window))
        with prometheus:
            print(f"Prometheus: {prometheus.url}", flush=True)
            load_start = time.time()
            load_name = f"demo-loadtest-{config.load.model}-{config.load.protocol}"
            load_cmd = ["python", "-m", "benchmarks", "loadtest", "--model", config.load.model,
                        "--protocol", config.load.protocol, "--http-port", str(config.http_port),
                        "--grpc-port", str(config.grpc_port), "--users", str(config.load.users),
                        "--duration", f"{config.load.duration_s:g}", "--client-metrics-port",
                        str(config.client_metrics_port), "--max-error-rate", str(config.load.max_error_rate),
                        "--name", load_name, "--results-dir", str(config.results_dir)]
            if config.load.run_dir:
                load_cmd += ["--run-dir", str(config.load.run_dir)]
            run_command(load_cmd, "the load test")
            time.sleep(3)  # one more scrape and rule evaluation after the last request
            load_end = time.time()
            timings["load test"] = time.monotonic() - t

            banner(6, total, "report: Prometheus panels as PNG, results and a Markdown report")
            panels_dir = config.results_dir / "demo-panels"
            run_command(["python", "-m", "monitoring", "panels", "--prometheus", prometheus.url,
                         "--start", f"{load_start - 10:.0f}", "--end", f"{load_end:.0f}", "--out", str(panels_dir),
                         "--expect", "triton", "--step", "1"], "rendering the monitoring panels")
            load_result = json.loads((ROOT / config.results_dir / f"{load_name}.json").read_text())["result"]
            agreement = compare_with_locust(prometheus.api, config.load.model, rate_window, load_result,
                                            ROOT / panels_dir)
            print(describe(agreement), flush=True)
        report = write_report(config, version, queries, ROOT / config.results_dir / f"{load_name}.json",
                              panels_dir, timings, search=search)
    if server.running():
        raise UserError("Triton is still running after shutdown; stop it with `pkill tritonserver`")
    print(f"\nTriton and Prometheus stopped. Demo finished in {time.monotonic() - started:.0f} s.", flush=True)
    print(f"Report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
