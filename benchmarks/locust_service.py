"""``python -m benchmarks locust``: Locust as a long-running service (docker compose): master with web UI, or worker.

The one-shot ``loadtest`` command is for runs with a result and a gate; this one waits until the model is ready
(Triton may still be building and loading), prepares the same deterministic payloads on every process, then hands
the process over to Locust: the master serves the web UI on ``--web-port`` and the workers generate load and serve
their client latency histograms for Prometheus on ``--client-metrics-port``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.load_settings import LoadSettings
from benchmarks.loadtest import LOCUSTFILE
from benchmarks.payloads import make_payloads, model_inputs, save_payloads
from common.errors import UserError
from common.net import wait_http_ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=["master", "worker", "standalone"], default="standalone",
                        help="master: web UI + coordination; worker: generates load; standalone: both in one process")
    parser.add_argument("--host", default="127.0.0.1", help="Triton host (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000, help="Triton HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="Triton gRPC port (default 8001)")
    parser.add_argument("--model", default="textclf_text", help="model to load (default textclf_text)")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="grpc", help="wire protocol (default grpc)")
    parser.add_argument("--arrival", choices=["closed", "poisson"], default="closed", help="arrival process per user")
    parser.add_argument("--rate-per-user", type=float, default=10.0, help="poisson: mean requests/s per user")
    parser.add_argument("--payloads", type=int, default=512, help="distinct requests (default 512)")
    parser.add_argument("--run-dir", help="training run directory, for realistic token inputs")
    parser.add_argument("--expect-workers", type=int, default=1, help="master: workers to wait for (default 1)")
    parser.add_argument("--master-host", default="locust-master", help="worker: where the master runs")
    parser.add_argument("--master-port", type=int, default=5557, help="master's port for workers (default 5557)")
    parser.add_argument("--web-port", type=int, default=8089, help="master/standalone: web UI port (default 8089)")
    parser.add_argument("--client-metrics-port", type=int, default=0,
                        help="worker/standalone: serve client latency histograms on this port (default off)")
    parser.add_argument("--wait-ready", type=float, default=600.0,
                        help="seconds to wait for the model to become ready (default 600)")


def run(args: argparse.Namespace) -> int:
    ready_url = f"http://{args.host}:{args.http_port}/v2/models/{args.model}/ready"
    print(f"[locust] waiting up to {args.wait_ready:.0f} s for {ready_url}", flush=True)
    if not wait_http_ok(ready_url, timeout=args.wait_ready, interval=2.0):
        raise UserError(f"model {args.model!r} did not become ready at {ready_url} within {args.wait_ready:.0f} s")
    inputs, _ = model_inputs(f"{args.host}:{args.http_port}", args.model)
    payload_file = Path(tempfile.gettempdir()) / f"locust-{args.model}-payloads.npz"
    save_payloads(payload_file, make_payloads(args.model, inputs, args.payloads,
                                              run_dir=Path(args.run_dir) if args.run_dir else None))
    settings = LoadSettings(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, protocol=args.protocol,
                            model=args.model, payload_file=str(payload_file), arrival=args.arrival,
                            rate_per_user=args.rate_per_user, client_metrics_port=args.client_metrics_port)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    if args.role == "master":
        command += ["--master", "--master-bind-port", str(args.master_port), "--expect-workers", str(args.expect_workers),
                    "--web-port", str(args.web_port)]
    elif args.role == "worker":
        command += ["--worker", "--master-host", args.master_host, "--master-port", str(args.master_port)]
    else:
        command += ["--web-port", str(args.web_port)]
    print(f"[locust] {args.role}: {' '.join(command)}", flush=True)
    os.execvpe(command[0], command, {**os.environ, **settings.to_env()})
