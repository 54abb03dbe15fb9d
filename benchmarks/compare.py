"""``python -m benchmarks compare``: every way to serve one model, side by side, in one run on this machine.

Same model (``textclf`` at its default size), same inputs (held-out messages tokenized to exactly ``--seq-len``
tokens), batch-1 requests, concurrency sweep (default 1/4/16/64):

* in-process: PyTorch eager; ONNX Runtime FP32 and INT8, with concurrent callers and with ideal batching;
* Triton (the real server, python backend running ONNX Runtime): gRPC and HTTP, dynamic batching on and off;
* the baseline a team would otherwise write: FastAPI + uvicorn calling PyTorch eager (benchmarks/baseline_fastapi.py);
* on a CUDA host also PyTorch eager and ``torch.compile`` on the GPU and ONNX Runtime's CUDA provider (TensorRT plans
  are measured against the compose stack's Triton with ``loadtest``; this machine's report says which rows it skipped);
* the tuning ladder: the builders' CPU configuration changed one knob at a time, at concurrency 1 and 64.

Served configurations are driven by ``benchmarks/loadgen.py`` in its own process, so its CPU use is reported apart from
the server's. Writes under benchmarks/results/: ``compare.json`` (a list of rows), ``compare-report.md`` (machine
facts, targets met or missed with the numbers, what each tuning step bought), ``compare-summary.json`` and PNG plots
(throughput and p99 vs concurrency, latency CDF).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_DIR
from benchmarks.compare_variants import DEFAULTS, NO_BATCHING, VARIANTS, write_repository
from benchmarks.cpu_usage import CpuMeter
from benchmarks.triton_stats import StatsWindow
from common.errors import UserError
from common.net import free_port, wait_http_ok
from common.processes import stop as stop_process

ROOT = Path(__file__).resolve().parents[1]
DEMO_TRAINING_CONFIG = "training/configs/textclf-demo.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["textclf", "minilm"], default="textclf",
                        help="textclf (default): our trained classifier every way; minilm: the real all-MiniLM-L6-v2 "
                             "against sentence-transformers, ONNX Runtime, FastAPI and Infinity "
                             "(benchmarks/compare_minilm.py)")
    parser.add_argument("--quick", action="store_true",
                        help="minilm: a smoke run (concurrency 1 and 4, 1 s windows, 64 sentences), for tests")
    parser.add_argument("--configs", help="minilm: comma-separated subset of sentence-transformers, onnxruntime, "
                                          "triton, fastapi, infinity (default all)")
    parser.add_argument("--infinity-venv", type=Path,
                        help="minilm: Infinity's own virtual environment (default .cache/peers/infinity-0.0.78; "
                             "created on first use)")
    parser.add_argument("--run-dir", default="runs/textclf",
                        help="textclf training run (default runs/textclf; trained with the demo settings if missing)")
    parser.add_argument("--repository", default="model_repository",
                        help="repository whose serving textclf version is reused when it holds this run's weights")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated concurrency sweep (default 1,4,16,64)")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per request (default 64)")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per point (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point (default 1)")
    parser.add_argument("--max-window", type=float, default=24.0,
                        help="--model minilm: the longest a slow point's measured window is stretched to, so that "
                             "every caller completes several requests (default 24; see benchmarks/windows.py)")
    parser.add_argument("--ladder-rounds", type=int, default=2,
                        help="interleaved rounds of the tuning ladder; each step reports its median (default 2)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["inprocess", "triton", "fastapi", "ladder", "infinity", "onnxruntime",
                                 "sentence-transformers"],
                        help="leave a group out (repeatable)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where results go (default benchmarks/results)")


@dataclass
class Plan:
    concurrency: list[int]
    seq_len: int
    duration_s: float
    warmup_s: float
    ladder_rounds: int = 2


class Progress:
    """``[compare] 12/57 triton-grpc c=16: 845 req/s, p99 40.1 ms (elapsed 2:10, ETA 3:40)``."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def step(self, row: dict) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        print(f"[compare] {self.done}/{self.total} {row['config']} c={row['concurrency']}: "
              f"{row['throughput_rps']:.0f} req/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
              + (f", {row['errors']} errors" if row["errors"] else "")
              + f" (elapsed {elapsed // 60:.0f}:{elapsed % 60:02.0f}, ETA {eta // 60:.0f}:{eta % 60:02.0f})", flush=True)


def summarize(latencies_ms: list[float], throughput: float, errors: dict[str, int]) -> dict:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if lat.size else (lambda q: None)
    return {"throughput_rps": round(float(throughput), 1), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": round(float(lat.mean()), 3) if lat.size else None, "max_ms": round(float(lat.max()), 3) if lat.size else None,
            "requests": int(lat.size), "errors": int(sum(errors.values())),
            "error_kinds": [{"error": k, "count": v} for k, v in errors.items()]}


# -- inputs and artifacts --------------------------------------------------------------------------------------------
def ensure_run(run_dir: Path) -> None:
    if (run_dir / "manifest.json").is_file():
        return
    print(f"[compare] no training run at {run_dir}: training one with {DEMO_TRAINING_CONFIG} (about 2-3 minutes)", flush=True)
    code = subprocess.call([sys.executable, "-m", "training", "--config", DEMO_TRAINING_CONFIG, "--run-dir", str(run_dir)],
                           cwd=ROOT)
    if code != 0:
        raise UserError(f"training {run_dir} failed (exit status {code}); see the output above")


def source_version(run_dir: Path, repository: Path, work: Path) -> Path:
    """A version folder with model.onnx, model.int8.onnx and model.py built from ``run_dir``'s weights."""
    from builders.pipeline import already_serving
    from builders.repository import serving_version
    from builders.settings import BuildConfig
    from common.manifest import read_manifest

    manifest = read_manifest(run_dir)
    if already_serving(repository / "textclf", manifest, BuildConfig()) is not None:
        return repository / "textclf" / str(serving_version(repository / "textclf"))
    scratch = work / "built"
    print(f"[compare] building {run_dir} into {scratch} (no serving version in {repository} was built from these weights with the current build settings)", flush=True)
    code = subprocess.call([sys.executable, "-m", "builders", "build", "--run-dir", str(run_dir), "--repository",
                            str(scratch), "--work-dir", str(work / "builds"), "--quiet"], cwd=ROOT)
    if code != 0:
        raise UserError(f"building {run_dir} failed (exit status {code}); see the output above")
    return scratch / "textclf" / str(serving_version(scratch / "textclf"))


def payloads(run_dir: Path, seq_len: int, path: Path):
    from benchmarks.payloads import InputSpec, make_payloads, save_payloads

    items = make_payloads("textclf", [InputSpec("input_ids", "INT64", (-1,))], 512, seq_len=seq_len, run_dir=run_dir)
    save_payloads(path, items)
    return items


# -- measurements ----------------------------------------------------------------------------------------------------
def run_loadgen(target: str, url: str, model: str, payload_file: Path, concurrency: int, plan: Plan, work: Path) -> dict:
    from benchmarks.loadgen import LoadSpec

    spec = LoadSpec(target=target, url=url, model=model, payload_file=str(payload_file), concurrency=concurrency,
                    duration_s=plan.duration_s, warmup_s=plan.warmup_s)
    spec_file = work / "loadgen-spec.json"
    spec_file.write_text(spec.model_dump_json())
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", str(spec_file)], capture_output=True, text=True,
                         cwd=ROOT, timeout=plan.duration_s + plan.warmup_s + 120)
    if out.returncode != 0:
        raise UserError(f"the load generator failed against {url} ({target}): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def served_row(config: str, family: str, protocol: str, target: str, url: str, model: str, server_pid: int,
               stats_url: str | None, payload_file: Path, concurrency: int, plan: Plan, work: Path,
               description: str, latencies: dict) -> dict:
    meter = CpuMeter({"server": server_pid}).start()
    stats = StatsWindow(stats_url, model).start() if stats_url else None
    result = run_loadgen(target, url, model, payload_file, concurrency, plan, work)
    cores = meter.stop()
    row = {"config": config, "family": family, "protocol": protocol, "concurrency": concurrency,
           **summarize(result["latencies_ms"], result["throughput_rps"], result["errors"]),
           "cpu_server_cores": cores.get("server"), "cpu_loadgen_cores": round(result["cpu_cores"], 3),
           "server_side": stats.stop() if stats else None, "model_variant": model, "description": description}
    latencies[(config, concurrency)] = result["latencies_ms"]
    return row


def inprocess_rows(exported, onnx_dir: Path, items, plan: Plan, progress: Progress, latencies: dict) -> list[dict]:
    from benchmarks import inprocess

    rows = []
    configs = [("pytorch-eager", "threads", "PyTorch eager, concurrent batch-1 callers"),
               ("onnxruntime-fp32", "threads", "ONNX Runtime FP32, concurrent batch-1 callers"),
               ("onnxruntime-int8", "threads", "ONNX Runtime INT8 (dynamic quantization), concurrent batch-1 callers"),
               ("onnxruntime-fp32-batched", "batched", "ONNX Runtime FP32, one caller running batches of `concurrency`"),
               ("onnxruntime-int8-batched", "batched", "ONNX Runtime INT8, one caller running batches of `concurrency`")]
    for config, mode, description in configs:
        for c in plan.concurrency:
            if mode == "batched" and c == 1:
                continue  # the same as one batch-1 caller
            if config == "pytorch-eager":
                m = inprocess.run_torch(exported.model, items, c, mode, plan.duration_s, plan.warmup_s)
            else:
                onnx = onnx_dir / ("model.int8.onnx" if "int8" in config else "model.onnx")
                m = inprocess.run_onnxruntime(str(onnx), items, c, mode, plan.duration_s, plan.warmup_s)
            row = {"config": config, "family": "in-process", "protocol": "in-process", "concurrency": c,
                   **summarize(m.latencies_ms, m.throughput_rps, m.errors), "cpu_server_cores": m.cpu_cores,
                   "cpu_loadgen_cores": None, "server_side": None, "model_variant": None, "description": description}
            latencies[(config, c)] = m.latencies_ms
            rows.append(row)
            progress.step(row)
    return rows


def gpu_rows(exported, onnx_dir: Path, items, plan: Plan, progress: Progress, latencies: dict) -> tuple[list[dict], list[str]]:
    """PyTorch eager / torch.compile on CUDA and ONNX Runtime's CUDA provider, when this machine has a GPU."""
    import torch

    if not torch.cuda.is_available():
        return [], ["GPU rows (PyTorch eager and torch.compile on CUDA, ONNX Runtime CUDA, TensorRT FP16/INT8 plans): "
                    "no CUDA GPU on this machine"]
    from benchmarks import inprocess

    rows, skipped = [], ["TensorRT plans: measured through Triton on the GPU stack (`python -m benchmarks loadtest "
                         "--host <triton>` against docker compose), not in-process here"]
    model = exported.model.cuda().eval()
    runners = [("pytorch-eager-cuda", lambda c: inprocess.run_torch(model, items, c, "batched", plan.duration_s,
                                                                     plan.warmup_s, device="cuda")),
               ("pytorch-compile-cuda", lambda c: inprocess.run_torch(torch.compile(model), items, c, "batched",
                                                                       plan.duration_s, plan.warmup_s, device="cuda"))]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        runners.append(("onnxruntime-cuda", lambda c: inprocess.run_onnxruntime(
            str(onnx_dir / "model.onnx"), items, c, "batched", plan.duration_s, plan.warmup_s, provider="CUDAExecutionProvider")))
    else:
        skipped.append("onnxruntime-cuda: this onnxruntime has no CUDAExecutionProvider (replace it with "
                       "onnxruntime-gpu: see docker/requirements-ngc.txt)")
    for config, runner in runners:
        for c in plan.concurrency:
            m = runner(c)
            row = {"config": config, "family": "in-process", "protocol": "in-process", "concurrency": c,
                   **summarize(m.latencies_ms, m.throughput_rps, m.errors), "cpu_server_cores": m.cpu_cores,
                   "cpu_loadgen_cores": None, "server_side": None, "model_variant": None,
                   "description": f"{config}, batches of `concurrency`"}
            latencies[(config, c)] = m.latencies_ms
            rows.append(row)
            progress.step(row)
    return rows, skipped


def triton_rows(repository: Path, payload_file: Path, plan: Plan, work: Path, progress: Progress, latencies: dict,
                include_sweep: bool, include_ladder: bool) -> list[dict]:
    from clients.serve import ServerConfig, TritonServer

    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=work / "triton.log", ready_timeout_s=600)
    labels = {v.name: v.label for v in VARIANTS}
    rows = []
    print(f"[compare] starting Triton with {len(VARIANTS)} configurations of textclf (log: {config.log_file})", flush=True)
    with TritonServer(config) as server:
        pid = server.process.pid

        def measure(name: str, family: str, protocol: str, target: str, variant: str, c: int,
                    description: str | None = None) -> None:
            url = server.grpc_url if target == "triton-grpc" else server.http_url
            row = served_row(name, family, protocol, target, url, variant, pid, server.http_url, payload_file, c,
                             plan, work, description or labels[variant], latencies)
            rows.append(row)
            progress.step(row)

        if include_sweep:
            for variant, suffix in ((DEFAULTS, "dynamic-batching"), (NO_BATCHING, "no-batching")):
                for protocol, target in (("grpc", "triton-grpc"), ("http-binary", "triton-http")):
                    for c in plan.concurrency:
                        measure(f"triton-{protocol.split('-')[0]}-{suffix}", "triton", protocol, target, variant, c)
        if include_ladder:
            # round-robin over the variants, several rounds: the machine drifts by tens of percent over minutes, so
            # each variant's median over interleaved rounds is what the ladder compares
            top = max(plan.concurrency)
            steps = [(f"tuning:{v.name}", "grpc", "triton-grpc", v.name, None) for v in VARIANTS if v.name != NO_BATCHING]
            steps.append(("tuning:http-json", "http-json", "triton-http-json", DEFAULTS,
                          "today's defaults over HTTP with JSON tensors instead of binary"))
            rounds: dict[tuple[str, int], list[dict]] = {}
            for _ in range(plan.ladder_rounds):
                for name, protocol, target, variant, description in steps:
                    for c in ((top,) if protocol == "http-json" else (1, top)):
                        url = server.grpc_url if target == "triton-grpc" else server.http_url
                        row = served_row(name, "tuning", protocol, target, url, variant, pid, server.http_url,
                                         payload_file, c, plan, work, description or labels[variant], latencies)
                        rounds.setdefault((name, c), []).append(row)
                        progress.step(row)
            for runs in rounds.values():
                runs.sort(key=lambda r: r["throughput_rps"])
                median = dict(runs[len(runs) // 2])
                median["rounds"] = [{"throughput_rps": r["throughput_rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}
                                    for r in runs]
                rows.append(median)
    return rows


def fastapi_rows(run_dir: Path, payload_file: Path, plan: Plan, work: Path, progress: Progress, latencies: dict) -> list[dict]:
    port = free_port()
    log = open(work / "fastapi.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.baseline_fastapi", "--run-dir", str(run_dir), "--port",
                             str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        if not wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=120):
            raise UserError(f"the FastAPI baseline did not start; see {work / 'fastapi.log'}")
        for c in plan.concurrency:
            row = served_row("fastapi-pytorch", "baseline", "http-json", "fastapi", f"127.0.0.1:{port}", "textclf",
                             proc.pid, None, payload_file, c, plan, work,
                             "FastAPI + uvicorn, PyTorch eager per request (the baseline)", latencies)
            row["model_variant"] = None
            rows.append(row)
            progress.step(row)
    finally:
        stop_process(proc, grace_s=15)
        log.close()
    return rows


def run(args: argparse.Namespace) -> int:
    if args.model == "minilm":
        from benchmarks import compare_minilm

        return compare_minilm.run(args)
    from benchmarks.compare_report import write_outputs
    from benchmarks.machine import machine_facts
    from common.ort_install import inspect_install
    from training.export import load_exported

    try:
        concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        raise UserError(f"--concurrency {args.concurrency!r}: expected comma-separated positive integers, e.g. 1,4,16,64") from None
    if not concurrency or concurrency[0] < 1:
        raise UserError(f"--concurrency {args.concurrency!r}: expected comma-separated positive integers, e.g. 1,4,16,64")
    if args.duration <= 0 or args.warmup < 0 or args.seq_len < 2:
        raise UserError("expected --duration > 0, --warmup >= 0 and --seq-len >= 2")
    if args.ladder_rounds < 1:
        raise UserError(f"--ladder-rounds must be at least 1 (got {args.ladder_rounds})")
    plan = Plan(concurrency, args.seq_len, args.duration, args.warmup, args.ladder_rounds)
    ort_install = inspect_install()  # CPU or GPU build, and its providers: recorded with the figures
    print(f"[compare] {ort_install.summary()}", flush=True)
    run_dir, repository, results_dir = Path(args.run_dir), Path(args.repository), Path(args.results_dir)
    ensure_run(run_dir)
    exported = load_exported(run_dir)
    if exported.manifest.model != "textclf":
        raise UserError(f"{run_dir} holds a {exported.manifest.model!r} run; compare measures textclf (the issue's model)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        work = Path(tmp)
        version = source_version(run_dir, repository, work)
        items = payloads(run_dir, plan.seq_len, work / "payloads.npz")
        n_in = 0 if "inprocess" in args.skip else 5 * len(concurrency) - 2 * (1 in concurrency)
        ladder_points = 2 * (len(VARIANTS) - 1) + 1
        n_tr = (0 if "triton" in args.skip else 4 * len(concurrency)) + (0 if "ladder" in args.skip else plan.ladder_rounds * ladder_points)
        n_fa = 0 if "fastapi" in args.skip else len(concurrency)
        progress = Progress(n_in + n_tr + n_fa)
        latencies: dict = {}
        rows: list[dict] = []
        skipped: list[str] = []
        if "inprocess" not in args.skip:
            rows += inprocess_rows(exported, version, items, plan, progress, latencies)
            gpu, why = gpu_rows(exported, version, items, plan, progress, latencies)
            rows += gpu
            skipped += why
        if "triton" not in args.skip or "ladder" not in args.skip:
            repo = write_repository(version, exported.manifest, work)
            rows += triton_rows(repo, work / "payloads.npz", plan, work, progress, latencies,
                                "triton" not in args.skip, "ladder" not in args.skip)
        if "fastapi" not in args.skip:
            rows += fastapi_rows(run_dir, work / "payloads.npz", plan, work, progress, latencies)
    facts = {**machine_facts(), "onnxruntime": ort_install.to_dict()}
    summary = write_outputs(rows, latencies, plan, facts, skipped, results_dir,
                            time.monotonic() - started, {v.name: v.label for v in VARIANTS})
    print(f"[compare] wrote {results_dir / 'compare.json'}, {results_dir / 'compare-report.md'} and plots "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    for line in summary["target_lines"]:
        print(f"[compare] {line}", flush=True)
    return 0
