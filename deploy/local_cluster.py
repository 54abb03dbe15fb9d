"""``python -m deploy local-cluster``: the Kubernetes rollout story on one machine, with real parts, in about a minute.

What runs (all on 127.0.0.1): moto's S3 server holding the model repository; Triton replicas started by the platform's
launcher reading ``s3://127.0.0.1:PORT/models/repo`` themselves, in explicit model-control mode with an admin token
(as the Deployment runs them); nginx in front of them for HTTP and gRPC (HTTP/2), retrying a request on the next
replica when one refuses or drops the connection; client threads sending bounded load through nginx with the
platform's client (retries on retryable failures), and Locust (``benchmarks loadtest``) for the overload; the real
Prometheus with the generated recording rules. The probe model answers with the version number it was published as,
so every response says which version served it.

The scenario: version 1 serves; version 2 is published to the object store (a version appears whole or not at all,
see builders/object_store.py); a third replica starts in the middle of the rollout and must come up with version 2;
the builder's rollout loads version 2 on every ready replica (explicit model control: Triton keeps serving version 1
until version 2 is loaded, then switches; each replica is checked, and replicas that became ready meanwhile are
re-checked until all agree); Locust overloads the replicas for a while (queue time per request must rise and fall,
and the HPA formula is applied to what Prometheus recorded); then one replica is killed with ``kill -9``. Printed:
requests sent and failed per phase (0 failures expected during the rollout), each replica's serving version over
time, queue time per request and the HPA's recommendation. Exit status 1 when a guarantee did not hold.

Why explicit model control and not a rolling restart: loading a version on a running Triton costs no capacity and no
cold start, and the old version answers until the new one is ready; a rolling update of the Deployment is what
changes the *server* (image, flags). A replica that starts mid-rollout reads the configuration the object store pins
at that moment, which is the new version once it is published.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from common import cli
from common.errors import UserError
from common.net import free_port, wait_http_ok

MODEL = "answer"
MEMBERS = ("idle", "answer")
NGINX_FALLBACKS = ("/usr/sbin/nginx",)      # Debian installs it outside a non-root user's PATH


def nginx_binary() -> str:
    """Found first, so a machine without nginx learns it in the first second (Debian: apt-get install nginx-light)."""
    found = shutil.which("nginx") or next((p for p in NGINX_FALLBACKS if os.access(p, os.X_OK)), None)
    if not found:
        raise UserError("nginx is not installed; the local multi-replica run balances through a real nginx "
                        "(Debian/Ubuntu: apt-get install nginx-light)")
    return found


def nginx_config(run_dir: Path, http_port: int, grpc_port: int, replicas: list[tuple[int, int]]) -> str:
    """HTTP and gRPC balancing over every replica; a refused or dropped connection is retried on the next replica.

    A replica killed with ``kill -9`` does not always reset its connections (the python backend's stub processes
    inherit its sockets and live on for a moment), so a request in flight there would hang until the client's
    deadline: a 2 s read timeout (the probe model answers in milliseconds; size it above your p99.9) makes nginx send
    it to the next replica instead.

    ``non_idempotent``: nginx does not retry POSTs by default; inference requests have no side effect, so a request
    that a dying replica dropped is safe to send again."""
    http = "\n".join(f"    server 127.0.0.1:{h} max_fails=1 fail_timeout=2s;" for h, _ in replicas)
    grpc = "\n".join(f"    server 127.0.0.1:{g} max_fails=1 fail_timeout=2s;" for _, g in replicas)
    temp = run_dir / "nginx-temp"
    return f"""worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  upstream triton_http {{
{http}
    keepalive 16;
  }}
  upstream triton_grpc {{
{grpc}
  }}
  server {{
    listen 127.0.0.1:{http_port};
    location / {{
      proxy_pass http://triton_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_read_timeout 2s;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
    }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2;
    location / {{
      grpc_pass grpc://triton_grpc;
      grpc_connect_timeout 1s;
      grpc_read_timeout 2s;
      grpc_next_upstream error timeout http_502 http_503 non_idempotent;
      grpc_next_upstream_tries 3;
    }}
  }}
}}
"""


@dataclass
class Outcome:
    t: float
    protocol: str
    ok: bool
    version: int | None
    error: str = ""


@dataclass
class Run:
    start: float = field(default_factory=time.monotonic)
    start_wall: float = field(default_factory=time.time)
    outcomes: list[Outcome] = field(default_factory=list)
    versions: dict[str, list[tuple[float, str]]] = field(default_factory=dict)   # replica -> (t, state) changes
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.start

    def record_version(self, replica: str, state: str) -> None:
        with self.lock:
            history = self.versions.setdefault(replica, [])
            if not history or history[-1][1] != state:
                history.append((round(self.now(), 2), state))

    def in_phase(self, name: str) -> list[Outcome]:
        begin, end = self.phases[name]
        return [o for o in self.outcomes if begin <= o.t <= end]


def serving_state(http_port: int) -> str:
    """What a replica serves right now: 'v<N>' for the ready versions of the probe model, or 'down'."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{MODEL}", timeout=2) as response:
            versions = json.loads(response.read()).get("versions", [])
        return "v" + ",".join(sorted(versions)) if versions else "no version"
    except TimeoutError:
        return "no answer within 2 s"     # busy (two cores shared by everything), not necessarily down
    except urllib.error.URLError as exc:
        return "no answer within 2 s" if isinstance(exc.reason, TimeoutError) else "down"
    except OSError:
        return "down"


def load_worker(run: Run, url: str, protocol: str, stop: threading.Event, pause_s: float) -> None:
    from clients import TritonClient
    from clients.settings import RetryPolicy

    retry = RetryPolicy(timeout_s=5, budget_s=10, backoff_initial_s=0.05, backoff_max_s=0.5)
    x = np.zeros((1, 1), np.float32)
    with TritonClient(url, protocol, retry=retry) as client:
        while not stop.is_set():
            t = run.now()
            try:
                result = client.infer(MODEL, {"x": x})
                outcome = Outcome(t, protocol, True, int(result.outputs["y"][0, 0]))
            except Exception as exc:  # any failure the client could not retry away is counted
                outcome = Outcome(t, protocol, False, None, f"{type(exc).__name__}: {exc}"[:200])
            with run.lock:
                run.outcomes.append(outcome)
            stop.wait(pause_s)


def poll_versions(run: Run, replicas: dict[str, int], stop: threading.Event) -> None:
    while not stop.is_set():
        for name, port in list(replicas.items()):
            run.record_version(name, serving_state(port))
        stop.wait(0.25)


class Cluster:
    """Every process of the run; ``close`` stops exactly those, whatever happened."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.servers: dict[str, object] = {}
        self.nginx: subprocess.Popen | None = None

    def start_replica(self, name: str, repository: str) -> object:
        from clients.serve import ServerConfig, TritonServer

        config = ServerConfig(repository=repository, http_port=self.ports[name][0], grpc_port=self.ports[name][1],
                              metrics_port=self.ports[name][2], model_control="explicit", exit_timeout_s=5,
                              ready_timeout_s=90, log_file=self.run_dir / f"triton-{name}.log")
        server = TritonServer(config)
        self.servers[name] = server
        server.start()
        return server

    def start_nginx(self, binary: str, http_port: int, grpc_port: int) -> None:
        (self.run_dir / "nginx-temp").mkdir(exist_ok=True)
        conf = self.run_dir / "nginx.conf"
        conf.write_text(nginx_config(self.run_dir, http_port, grpc_port, [p[:2] for p in self.ports.values()]))
        check = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(self.run_dir)], capture_output=True, text=True)
        if check.returncode != 0:
            reason = next((line for line in check.stderr.splitlines() if "[emerg]" in line), check.stderr.strip())
            raise UserError(f"nginx refused {conf}: {reason}")
        self.nginx = subprocess.Popen([binary, "-c", str(conf), "-p", str(self.run_dir), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_http_ok(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=15):
            raise UserError(f"nginx did not start balancing on 127.0.0.1:{http_port} (log: {self.run_dir}/nginx-error.log)")

    def close(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)   # graceful: the master stops its own workers
            try:
                self.nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        for server in self.servers.values():
            server.stop()


def start_load(run: Run, count: int, ports: tuple[int, int], stop: threading.Event, pause_s: float,
               first: int = 0) -> list[threading.Thread]:
    """``count`` client threads alternating HTTP and gRPC through nginx."""
    threads = []
    for i in range(first, first + count):
        protocol = "grpc" if i % 2 else "http"
        url = f"127.0.0.1:{ports[1] if protocol == 'grpc' else ports[0]}"
        thread = threading.Thread(target=load_worker, args=(run, url, protocol, stop, pause_s), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def run_locust(run_dir: Path, ports: tuple[int, int], users: int, duration_s: float) -> dict:
    """``python -m benchmarks loadtest`` (Locust, in its own process: gevent and our threads do not mix) through
    nginx's gRPC port; its requests and failures, from the results file it writes."""
    out = run_dir / "locust"
    command = [sys.executable, "-m", "benchmarks", "loadtest", "--host", "127.0.0.1", "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--protocol", "grpc", "--model", MODEL, "--users", str(users),
               "--spawn-rate", str(users), "--duration", str(duration_s), "--results-dir", str(out),
               "--name", "overload"]
    with open(run_dir / "locust.log", "wb") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=duration_s + 120)
    results = out / "overload.json"
    if proc.returncode != 0 or not results.is_file():
        tail = (run_dir / "locust.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise UserError(f"Locust failed (exit status {proc.returncode}; log {run_dir / 'locust.log'}): {tail}")
    row = json.loads(results.read_text())["result"]
    return {key: row.get(key) for key in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms", "concurrency")}


def start_prometheus(run_dir: Path, metrics: list[str], rate_window: str):
    """The real Prometheus scraping every replica slot every second, with the generated recording rules (their rate
    window shortened to fit a one-minute run); None, said aloud, when it is not installed."""
    from monitoring.local_prometheus import LocalPrometheus, LocalPrometheusConfig

    if shutil.which("prometheus") is None:
        print("prometheus is not installed: the autoscaling signal is not evaluated (apt-get install prometheus)",
              flush=True)
        return None
    prometheus = LocalPrometheus(LocalPrometheusConfig(targets={"triton": metrics}, port=free_port(),
                                                       rate_window=rate_window))
    return prometheus.start()


def scenario(args: argparse.Namespace, run_dir: Path) -> dict:
    from builders.object_store import publish_package
    from builders.repository import Package
    from deploy.local_s3 import create_bucket, moto_server
    from deploy.probe_model import make_package
    from deploy.rollout import converge

    nginx = nginx_binary()
    print(f"nginx: {nginx}", flush=True)
    run = Run()
    names = [chr(ord("a") + i) for i in range(args.replicas + 1)]    # the last one starts during the rollout
    cluster = Cluster(run_dir)
    cluster.ports = {name: (free_port(), free_port(), free_port()) for name in names}
    stop_load, stop_overload, stop_poll = threading.Event(), threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    prometheus = None
    locust = None
    package = {"delay_ms": args.delay_ms, "max_batch_size": 4}
    try:
        with moto_server(run_dir / "moto.log") as endpoint:
            create_bucket(endpoint, "models")
            repository = f"s3://{endpoint}/models/repo"
            publish_package(Package.read(make_package(run_dir / "v1", 1.0, **package)), repository)
            print(f"[{run.now():6.2f}s] moto S3 on {endpoint}; version 1 published to {repository}", flush=True)
            prometheus = start_prometheus(run_dir, [f"127.0.0.1:{p[2]}" for p in cluster.ports.values()],
                                          args.rate_window)
            if prometheus:   # started first, so its rate windows are full when the load begins
                print(f"[{run.now():6.2f}s] Prometheus {prometheus.url} scraping every replica slot each second",
                      flush=True)
            for name in names[:-1]:
                cluster.start_replica(name, repository)
                print(f"[{run.now():6.2f}s] replica {name} ready (HTTP {cluster.ports[name][0]}, gRPC "
                      f"{cluster.ports[name][1]}) reading {repository}", flush=True)
            http_port, grpc_port = free_port(), free_port()
            cluster.start_nginx(nginx, http_port, grpc_port)
            print(f"[{run.now():6.2f}s] nginx balancing HTTP 127.0.0.1:{http_port} and gRPC 127.0.0.1:{grpc_port} "
                  f"over {len(names)} replica slots", flush=True)
            poller = threading.Thread(target=poll_versions, args=(run, {n: p[0] for n, p in cluster.ports.items()},
                                                                  stop_poll), daemon=True)
            poller.start()
            threads += start_load(run, args.clients, (http_port, grpc_port), stop_load, args.pause_s)
            begin = run.now()
            time.sleep(args.warmup_s)
            run.phases["warmup"] = (begin, run.now())

            begin = run.now()
            print(f"[{begin:6.2f}s] rollout: publishing version 2 to the object store", flush=True)
            publish_package(Package.read(make_package(run_dir / "v2", 2.0, **package)), repository)
            late = names[-1]
            cluster.start_replica(late, repository)
            late_state = serving_state(cluster.ports[late][0])
            print(f"[{run.now():6.2f}s] replica {late} started during the rollout: serves {late_state}", flush=True)
            converge(lambda: [cluster.servers[n].http_url for n in names if n in cluster.servers], MEMBERS, MODEL, 2,
                     timeout_s=60, log=lambda line: print(f"  [{run.now():6.2f}s] {line} (explicit model control)",
                                                           flush=True))
            time.sleep(args.settle_s)
            run.phases["rollout"] = (begin, run.now())
            print(f"[{run.now():6.2f}s] rollout done: every replica serves version 2", flush=True)

            if args.overload_clients:
                begin = run.now()
                if args.overload_with == "locust":
                    print(f"[{begin:6.2f}s] overload: Locust with {args.overload_clients} gRPC users through nginx",
                          flush=True)
                    locust = run_locust(run_dir, (http_port, grpc_port), args.overload_clients, args.overload_s)
                else:
                    print(f"[{begin:6.2f}s] overload: {args.overload_clients} more clients without pauses", flush=True)
                    overload = start_load(run, args.overload_clients, (http_port, grpc_port), stop_overload, 0.0,
                                          first=args.clients)
                    time.sleep(args.overload_s)
                    stop_overload.set()
                    for thread in overload:
                        thread.join(timeout=30)
                run.phases["overload"] = (begin, run.now())
                begin = run.now()
                time.sleep(args.calm_s)
                run.phases["calm"] = (begin, run.now())
                print(f"[{run.now():6.2f}s] calm again", flush=True)

            victim = names[0]
            begin = run.now()
            os.kill(cluster.servers[victim].process.pid, signal.SIGKILL)
            print(f"[{begin:6.2f}s] kill -9 of replica {victim} (pid {cluster.servers[victim].process.pid})", flush=True)
            time.sleep(args.after_kill_s)
            run.phases["kill"] = (begin, run.now())
            stop_load.set()
            for thread in threads:
                thread.join(timeout=30)
            stop_poll.set()
            poller.join(timeout=5)
            autoscaling = hpa_view(prometheus, run, args) if prometheus else None
    finally:
        stop_load.set()
        stop_overload.set()
        stop_poll.set()
        if prometheus:
            prometheus.stop()
        cluster.close()
    return {**summarize(run, late, late_state), "clients": args.clients, "autoscaling": autoscaling,
            "locust": locust}


def hpa_view(prometheus, run: Run, args: argparse.Namespace) -> dict:
    """The recorded queue time per request over the run, and what the HPA of the CPU overlay would do with it."""
    from deploy.autoscaling import Bounds, recommend, stabilized
    from deploy.settings import load_settings
    from monitoring.recording_rules import QUEUE_PER_REQUEST_FLEET, QUEUE_PER_REQUEST_POD

    settings = load_settings()
    overlay = settings.overlays[args.hpa_overlay]
    target = settings.autoscaling.target_queue_seconds
    bounds = Bounds(overlay.min_replicas, overlay.max_replicas)
    start = run.start_wall
    end = start + run.now()
    time.sleep(2)   # the last evaluation
    pods = prometheus.api.query_range(QUEUE_PER_REQUEST_POD, start, end, 1.0)
    fleet = prometheus.api.query_range(QUEUE_PER_REQUEST_FLEET, start, end, 1.0)
    per_time: dict[float, list[float]] = {}
    for series in pods:
        for t, v in zip(series.times, series.values):
            if v == v:   # not NaN
                per_time.setdefault(round(t - start, 1), []).append(v)
    fleet_at = {round(t - start, 1): v for s in fleet for t, v in zip(s.times, s.values) if v == v}
    recommendations = [(t, recommend(len(values), values, target, bounds)) for t, values in sorted(per_time.items())]
    held = dict(stabilized(recommendations, settings.autoscaling.scale_down_stabilization_seconds))
    timeline = [{"t": t, "pods": len(per_time[t]), "queue_ms_per_pod_mean": 1000 * sum(per_time[t]) / len(per_time[t]),
                 "queue_ms_fleet": 1000 * fleet_at.get(t, float("nan")), "recommended": r, "with_stabilisation": held[t]}
                for t, r in recommendations]

    def phase_mean(name: str) -> float | None:
        if name not in run.phases:
            return None
        begin, finish = run.phases[name]
        values = [v for t, v in fleet_at.items() if begin + 2 <= t <= finish]   # skip the window's ramp
        return 1000 * sum(values) / len(values) if values else None

    return {"target_ms": 1000 * target, "overlay": args.hpa_overlay, "min_replicas": bounds.min_replicas,
            "max_replicas": bounds.max_replicas, "rate_window": args.rate_window,
            "queue_ms_by_phase": {name: phase_mean(name) for name in run.phases},
            "max_recommended": {name: max((r for t, r in recommendations if run.phases[name][0] <= t
                                           <= run.phases[name][1]), default=None) for name in run.phases},
            "timeline": timeline}


def summarize(run: Run, late: str, late_state: str) -> dict:
    def counts(outcomes: list[Outcome]) -> dict:
        return {"sent": len(outcomes), "failed": sum(not o.ok for o in outcomes),
                "answered_by_version": {str(v): sum(o.version == v for o in outcomes if o.ok)
                                        for v in sorted({o.version for o in outcomes if o.ok})},
                "errors": sorted({o.error for o in outcomes if not o.ok})[:5]}

    rollout_end = run.phases["rollout"][1]
    after = [o for o in run.outcomes if o.ok and o.t > rollout_end]
    return {
        "total": counts(run.outcomes),
        "rollout": counts(run.in_phase("rollout")),
        **({"overload": counts(run.in_phase("overload")), "calm": counts(run.in_phase("calm"))}
           if "overload" in run.phases else {}),
        "after_kill": counts(run.in_phase("kill")),
        "old_version_after_rollout": sum(o.version != 2 for o in after),
        "late_replica": {"name": late, "first_state": late_state},
        "replica_versions": {name: history for name, history in sorted(run.versions.items())},
        "phases": run.phases,
    }


def report(summary: dict) -> list[str]:
    """The lines printed at the end, and the guarantees that did not hold (an empty list when all held)."""
    scaling = summary.get("autoscaling")
    if scaling:
        print(f"queue time per request (recording rule, rate window {scaling['rate_window']}) and the HPA of overlay "
              f"{scaling['overlay']} (target {scaling['target_ms']:g} ms, {scaling['min_replicas']}-"
              f"{scaling['max_replicas']} replicas):", flush=True)
        for name, mean in scaling["queue_ms_by_phase"].items():
            print(f"  {name:>8}: mean {mean if mean is None else round(mean, 1)} ms per request, HPA recommends up to "
                  f"{scaling['max_recommended'][name]} replicas", flush=True)
        print("  t(s)  pods  queue ms/req (pod mean)  recommended  with 300 s scale-down stabilisation", flush=True)
        for row in scaling["timeline"][::4]:
            print(f"  {row['t']:5.0f}  {row['pods']:4d}  {row['queue_ms_per_pod_mean']:22.1f}  {row['recommended']:11d}"
                  f"  {row['with_stabilisation']:d}", flush=True)
    if summary.get("locust"):
        lc = summary["locust"]
        print(f"    locust: {lc['requests']} requests through nginx (gRPC, {lc['concurrency']} users), {lc['errors']} "
              f"failed, {lc['throughput_rps']} req/s, p50 {lc['p50_ms']} ms, p99 {lc['p99_ms']} ms", flush=True)
    for phase in ("total", "rollout", "overload", "calm", "after_kill"):
        if phase not in summary:
            continue
        c = summary[phase]
        print(f"{phase:>10}: sent {c['sent']}, failed {c['failed']}, answered by version {c['answered_by_version']}"
              + (f"; errors: {c['errors']}" if c["errors"] else ""), flush=True)
    print("per-replica serving version over time (seconds since start):", flush=True)
    for name, history in summary["replica_versions"].items():
        print(f"  replica {name}: " + " -> ".join(f"{state} @{t:.1f}s" for t, state in history), flush=True)
    broken = []
    if summary["rollout"]["failed"]:
        broken.append(f"{summary['rollout']['failed']} request(s) failed during the rollout (0 expected)")
    if summary["old_version_after_rollout"]:
        broken.append(f"{summary['old_version_after_rollout']} response(s) came from version 1 after the rollout")
    if summary["late_replica"]["first_state"] != "v2":
        broken.append(f"replica {summary['late_replica']['name']}, started during the rollout, first served "
                      f"{summary['late_replica']['first_state']} (v2 expected)")
    if summary["after_kill"]["failed"] > summary["clients"]:
        broken.append(f"{summary['after_kill']['failed']} request(s) failed after the kill -9, more than the "
                      f"{summary['clients']} that can have been in flight on the killed replica")
    if scaling and "overload" in scaling["queue_ms_by_phase"]:
        phases = scaling["queue_ms_by_phase"]
        # against the steady phases before and after (a rollout on two shared cores queues too: loading a version
        # takes CPU from serving)
        if not (phases["overload"] or 0) > max(phases["warmup"] or 0, phases["calm"] or 0):
            broken.append(f"queue time per request did not rise under overload and fall after ({phases})")
        if not (scaling["max_recommended"]["overload"] or 0) > (scaling["max_recommended"]["warmup"] or 0):
            broken.append("the HPA formula did not recommend more replicas under overload than before it")
    if not summary["rollout"]["sent"] or not summary["after_kill"]["sent"]:
        broken.append("no load was sent in a phase")
    return broken


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=2, help="replicas serving before the rollout (default 2); "
                        "one more starts during the rollout")
    parser.add_argument("--clients", type=int, default=4, help="client threads, alternating HTTP and gRPC (default 4)")
    parser.add_argument("--pause-s", type=float, default=0.01, help="pause between one client's requests (bounds load)")
    parser.add_argument("--warmup-s", type=float, default=6.0, help="load before the rollout starts")
    parser.add_argument("--settle-s", type=float, default=2.0, help="load after every replica serves the new version")
    parser.add_argument("--after-kill-s", type=float, default=4.0, help="load after the kill -9")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the probe model's compute time per batch of 4")
    parser.add_argument("--overload-clients", type=int, default=24,
                        help="extra clients without pauses after the rollout (0: no overload phase)")
    parser.add_argument("--overload-s", type=float, default=10.0, help="length of the overload")
    parser.add_argument("--overload-with", choices=["locust", "threads"], default="locust",
                        help="the overload's load generator: Locust (benchmarks loadtest) or more client threads")
    parser.add_argument("--calm-s", type=float, default=8.0, help="normal load after the overload")
    parser.add_argument("--rate-window", default="4s", help="rate window of the recording rules in this short run")
    parser.add_argument("--hpa-overlay", default="cpu", help="overlay in settings.toml whose HPA bounds are applied")
    parser.add_argument("--run-dir", type=Path, help="where logs and configs go (default: a new temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the summary here")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m deploy local-cluster", __doc__, add_arguments, argv, args)
    if args.replicas < 1 or args.clients < 1:
        raise UserError("--replicas and --clients must be at least 1")
    nginx_binary()                              # before anything starts
    from deploy.local_s3 import aws_credentials

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="local-cluster."))
    run_dir.mkdir(parents=True, exist_ok=True)
    token = os.environ.get("TRITON_ADMIN_TOKEN")
    os.environ.setdefault("TRITON_ADMIN_TOKEN", os.urandom(16).hex())   # explicit control needs it, as on the cluster
    try:
        with aws_credentials():
            summary = scenario(args, run_dir)
    finally:
        if token is None:
            os.environ.pop("TRITON_ADMIN_TOKEN", None)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    broken = report(summary)
    print(f"logs: {run_dir}", flush=True)
    if broken:
        print("FAILED: " + "; ".join(broken), flush=True)
        return 1
    print("OK: zero failed requests during the rollout, every replica on version 2, the late replica started on it",
          flush=True)
    return 0
