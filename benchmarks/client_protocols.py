"""What each client fast path buys: HTTP (binary tensors) vs gRPC vs shared memory, against the real Triton.

``python -m benchmarks protocols --repository model_repository`` starts its own Triton on free ports (or uses a
running one with ``--http-url``/``--grpc-url``), then drives one model through the platform's own asyncio client
(:class:`clients.AsyncTritonClient`: the code users run, validation and metrics included) in a closed loop at each
concurrency: ``concurrency`` tasks each send a request, wait for the answer and send the next, for ``--duration``
seconds after ``--warmup``. Transports compared:

* ``http``: HTTP/1.1 with binary tensor data, kept-alive connections;
* ``grpc``: one HTTP/2 channel;
* ``grpc+shm`` / ``http+shm``: the same with inputs and outputs in system shared memory (client and server on one host).

Every row reports throughput, latency p50/p95/p99, errors, stalls (requests slower than max(100 ms, 10 x p50)) and
the CPU used by the server and by this process (on a 2-core machine they share the CPU, so a figure means little
without it). Results: a table on stdout,
``benchmarks/results/client_protocols.json`` and ``client_protocols.png``.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import cli
from common.errors import UserError
from common.files import atomic_write_json
from common.plots import save_png

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRANSPORTS = {  # name -> (protocol, shared memory)
    "http": ("http", "none"),
    "grpc": ("grpc", "none"),
    "grpc+shm": ("grpc", "system"),
    "http+shm": ("http", "system"),
}
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", default="model_repository",
                        help="model repository to serve with a Triton started for the run (default: model_repository)")
    parser.add_argument("--http-url", help="use a running Triton instead: its HTTP endpoint HOST:PORT")
    parser.add_argument("--grpc-url", help="use a running Triton instead: its gRPC endpoint HOST:PORT")
    parser.add_argument("--model", default="digits", help="model to drive (default digits)")
    parser.add_argument("--batch", type=int, default=8, help="rows per request (default 8)")
    parser.add_argument("--seq-len", type=int, default=64, help="size of any variable non-batch dimension (default 64)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16],
                        help="requests in flight, one measurement each (default: 1 16)")
    parser.add_argument("--transports", nargs="+", choices=list(TRANSPORTS), default=["http", "grpc", "grpc+shm"],
                        help="what to compare (default: http grpc grpc+shm)")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per row (default 6)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each row (default 1)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where results go (default benchmarks/results)")
    parser.add_argument("--name", default="client_protocols", help="results file name without extension")


def _payloads(info, batch: int, seq_len: int, count: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Requests shaped as the model expects: random values of the right datatype, every dimension fixed."""
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(count):
        payload = {}
        for spec in info.inputs:
            dims = list(spec.shape)
            if info.max_batch_size > 0:
                dims[0] = batch
            dims = [seq_len if d < 0 else d for d in dims]
            if spec.is_bytes:
                payload[spec.name] = np.array([f"benchmark request {i}".encode() for i in range(int(np.prod(dims)))],
                                              dtype=np.object_).reshape(dims)
            elif spec.numpy_dtype.kind in "iu":
                payload[spec.name] = rng.integers(3, 50, size=dims).astype(spec.numpy_dtype)  # valid token ids
            else:
                payload[spec.name] = (rng.random(dims) * 16).astype(spec.numpy_dtype)
        payloads.append(payload)
    return payloads


async def _drive(client, model: str, payloads, concurrency: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    from clients.errors import ClientError

    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    started = time.perf_counter()
    record_from, stop_at = started + warmup_s, started + warmup_s + duration_s

    async def worker(index: int) -> None:
        k = index
        while (t0 := time.perf_counter()) < stop_at:
            try:
                await client.infer(model, payloads[k % len(payloads)])
                if t0 >= record_from:
                    latencies.append(time.perf_counter() - t0)
            except ClientError as exc:
                errors[type(exc).__name__] += 1
            k += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"latencies": latencies, "errors": dict(errors)}


def _row(transport: str, concurrency: int, measured: dict[str, Any], duration_s: float, cpu: dict) -> dict[str, Any]:
    lat = np.array(measured["latencies"]) * 1000.0
    row = {"transport": transport, "concurrency": concurrency, "requests": int(lat.size),
           "errors": measured["errors"], "throughput_rps": round(lat.size / duration_s, 1)}
    for q in (50, 95, 99):
        row[f"p{q}_ms"] = round(float(np.percentile(lat, q)), 3) if lat.size else None
    row["mean_ms"] = round(float(lat.mean()), 3) if lat.size else None
    # stalls: far slower than typical (e.g. Triton's dynamic batcher idling 500 ms with a queue-policy timeout set)
    row["stalled_requests"] = int((lat > max(100.0, 10.0 * row["p50_ms"])).sum()) if lat.size else 0
    row["cpu_cores"] = cpu
    return row


class _CpuWindow:
    """Cores used by Triton (its process tree) and by this process alone (Triton may be our child: not counted)."""

    def __init__(self, triton_pid: int | None):
        from benchmarks.cpu_usage import CpuMeter

        self._meter = CpuMeter({"triton": triton_pid})
        self._own = self._t0 = 0.0
        self.started = False

    def start(self) -> None:
        from benchmarks.cpu_usage import own_cpu_seconds

        self._meter.start()
        self._own, self._t0 = own_cpu_seconds(), time.perf_counter()
        self.started = True

    def stop(self) -> dict:
        from benchmarks.cpu_usage import own_cpu_seconds

        if not self.started:
            return {}
        cores = self._meter.stop()
        cores["client"] = round((own_cpu_seconds() - self._own) / max(time.perf_counter() - self._t0, 1e-9), 3)
        return cores


async def _measure_transport(transport: str, url: str, args, concurrency_levels: list[int],
                             triton_pid: int | None) -> list[dict]:
    from clients import AsyncTritonClient

    protocol, shm = TRANSPORTS[transport]
    rows = []
    async with AsyncTritonClient(url, protocol, shared_memory=shm,
                                 retry={"timeout_s": 30.0, "budget_s": 60.0},
                                 connection={"http_pool_size": max(concurrency_levels)},
                                 shared_memory_slots=max(concurrency_levels)) as client:
        info = await client.model_info(args.model)
        payloads = _payloads(info, args.batch, args.seq_len)
        await client.infer(args.model, payloads[0])  # connections, regions and the model warm before measuring
        for concurrency in concurrency_levels:
            window = _CpuWindow(triton_pid)

            async def start_window(window=window):  # CPU is measured over the measured seconds only
                await asyncio.sleep(args.warmup)
                window.start()

            starter = asyncio.create_task(start_window())
            measured = await _drive(client, args.model, payloads, concurrency, args.duration, args.warmup)
            await starter
            row = _row(transport, concurrency, measured, args.duration, window.stop())
            row["request_bytes"] = int(sum(a.nbytes for a in payloads[0].values() if a.dtype.kind != "O"))
            rows.append(row)
            print(f"  {transport:9s} c={concurrency:<3d} {row['throughput_rps']:>9,.1f} req/s   p50 {row['p50_ms']} ms"
                  f"   p99 {row['p99_ms']} ms   errors {sum(row['errors'].values())}", file=sys.stderr, flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'transport':10s} {'conc':>4s} {'req/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} "
             f"{'errors':>6s} {'stalls':>6s} {'server cores':>12s} {'client cores':>12s}"]
    for r in rows:
        cpu = r.get("cpu_cores") or {}
        lines.append(f"{r['transport']:10s} {r['concurrency']:>4d} {r['throughput_rps']:>9,.1f} "
                     f"{r['p50_ms'] or 0:>8.2f} {r['p95_ms'] or 0:>8.2f} {r['p99_ms'] or 0:>8.2f} "
                     f"{sum(r['errors'].values()):>6d} {r['stalled_requests']:>6d} {cpu.get('triton') or 0:>12.2f} "
                     f"{cpu.get('client') or 0:>12.2f}")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["concurrency"] for r in rows})
    transports = list(dict.fromkeys(r["transport"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    width = 0.8 / max(1, len(transports))
    for i, transport in enumerate(transports):
        mine = {r["concurrency"]: r for r in rows if r["transport"] == transport}
        xs = np.arange(len(levels)) + i * width
        bars = axes[0].bar(xs, [mine[c]["throughput_rps"] if c in mine else 0 for c in levels], width, label=transport)
        axes[0].bar_label(bars, fmt="%.0f", fontsize=8)
        p50 = [mine[c]["p50_ms"] or 0 if c in mine else 0 for c in levels]
        p99 = [mine[c]["p99_ms"] or 0 if c in mine else 0 for c in levels]
        axes[1].bar(xs, p99, width, alpha=0.35, color=f"C{i}")
        axes[1].bar(xs, p50, width, label=f"{transport} (p50; light: p99)", color=f"C{i}")
    for ax, ylabel in zip(axes, ("requests / s", "latency ms")):
        ax.set_xticks(np.arange(len(levels)) + width * (len(transports) - 1) / 2, [f"concurrency {c}" for c in levels])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_png(fig, path)


def _benefit(rows: list[dict]) -> dict[str, Any]:
    """Shared memory against the same protocol without it, per concurrency (positive: shared memory is faster)."""
    out = {}
    for row in rows:
        if not row["transport"].endswith("+shm"):
            continue
        base = next((r for r in rows if r["transport"] == row["transport"][:-4]
                     and r["concurrency"] == row["concurrency"]), None)
        if base and base["throughput_rps"] and base["p50_ms"] and row["p50_ms"]:
            out[f"{row['transport']} c={row['concurrency']}"] = {
                "throughput_change_pct": round(100.0 * (row["throughput_rps"] / base["throughput_rps"] - 1.0), 1),
                "p50_change_pct": round(100.0 * (row["p50_ms"] / base["p50_ms"] - 1.0), 1),
            }
    return out


def _check(args: argparse.Namespace) -> None:
    if args.batch < 1 or args.seq_len < 1 or args.duration <= 0 or args.warmup < 0:
        raise UserError("expected --batch >= 1, --seq-len >= 1, --duration > 0 and --warmup >= 0")
    if any(c < 1 for c in args.concurrency):
        raise UserError(f"--concurrency values must be >= 1 (got {args.concurrency})")
    if bool(args.http_url) != bool(args.grpc_url):
        raise UserError("give both --http-url and --grpc-url to use a running Triton (or neither to start one)")
    if args.http_url and not args.http_url.split(":")[0] in LOOPBACK:
        shm = [t for t in args.transports if t.endswith("+shm")]
        if shm:
            raise UserError(f"{', '.join(shm)} need the server on this host, but --http-url is {args.http_url}; "
                            "drop them from --transports")


def run(args: argparse.Namespace) -> int:
    from benchmarks.cpu_usage import listening_pid
    from benchmarks.machine import machine_facts
    from clients.serve import ServerConfig, TritonServer
    from common.net import free_port

    _check(args)
    server = None
    if args.http_url:
        http_url, grpc_url = args.http_url, args.grpc_url
    else:
        repository = Path(args.repository)
        if not (repository / args.model).is_dir():
            raise UserError(f"model repository {repository} has no model '{args.model}' (build one with `python -m "
                            f"builders build --run-dir RUN --repository {repository}`, or pass --repository/--model)")
        config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                              metrics_port=free_port(), log_file=Path(".cache/triton/client_protocols.log"),
                              exit_timeout_s=1)
        print(f"starting Triton on {repository} ...", file=sys.stderr, flush=True)
        server = TritonServer(config).start()
        http_url, grpc_url = server.http_url, server.grpc_url
    try:
        triton_pid = server.process.pid if server else listening_pid(int(http_url.rsplit(":", 1)[1]))
        rows = []
        total = len(args.transports)
        for n, transport in enumerate(args.transports, 1):
            url = grpc_url if TRANSPORTS[transport][0] == "grpc" else http_url
            print(f"[{n}/{total}] {transport} against {url} ...", file=sys.stderr, flush=True)
            rows.extend(asyncio.run(_measure_transport(transport, url, args, sorted(args.concurrency), triton_pid)))
    finally:
        if server is not None:
            server.stop()
    rows.sort(key=lambda r: (r["concurrency"], args.transports.index(r["transport"])))
    print(_table(rows), flush=True)
    benefit = _benefit(rows)
    for key, change in benefit.items():
        print(f"shared memory {key}: throughput {change['throughput_change_pct']:+.1f} %, "
              f"p50 {change['p50_change_pct']:+.1f} % vs the same protocol without it", flush=True)
    results_dir = Path(args.results_dir)
    data = {"benchmark": "client_protocols", "machine": machine_facts(),
            "settings": {"model": args.model, "batch": args.batch, "seq_len": args.seq_len,
                         "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": sorted(args.concurrency),
                         "server": "started for the run" if server else http_url,
                         "client": "clients.AsyncTritonClient (asyncio, one client per transport, closed loop)"},
            "rows": rows, "shared_memory_benefit": benefit}
    atomic_write_json(results_dir / f"{args.name}.json", data)
    _plot(rows, results_dir / f"{args.name}.png",
          f"{args.model}, batch {args.batch}: client transports against Triton ({machine_facts()['cpu_cores']} cores)")
    print(f"wrote {results_dir / (args.name + '.json')} and .png", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.command_parser("python -m benchmarks protocols", __doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main)
