"""A lean closed-loop load generator for side-by-side comparisons (``python -m benchmarks.loadgen SPEC.json``).

``compare`` needs one load generator that is the same for every served configuration and costs as little CPU as
possible (on two cores it competes with the server), so this is asyncio with pre-encoded requests: ``concurrency``
workers each send a request, wait for the answer, and send the next, for ``duration_s`` after ``warmup_s``.
It runs in its own process so its CPU use is measured apart from the server's, and prints one JSON object: every
latency in milliseconds, errors by kind, requests/s and its own CPU seconds.

Targets: ``triton-grpc`` (tritonclient.grpc.aio), ``triton-http`` (aiohttp with Triton's binary tensor bodies),
``fastapi`` (aiohttp posting JSON to the baseline service in benchmarks/baseline_fastapi.py).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import resource
import sys
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from benchmarks.payloads import load_payloads


class LoadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    target: Literal["triton-grpc", "triton-http", "fastapi"]
    url: str = Field(description="host:port")
    model: str
    payload_file: str
    concurrency: int = Field(ge=1)
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(10.0, gt=0)


def _datatype(array) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


async def _grpc_sender(spec: LoadSpec, payloads):
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(spec.url)
    requests = []
    for payload in payloads:
        inputs = []
        for name, array in payload.items():
            tensor = grpcclient.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requests.append(inputs)

    async def send(i: int) -> None:
        await client.infer(spec.model, requests[i % len(requests)], client_timeout=spec.timeout_s)

    return send, client.close


async def _http_sender(spec: LoadSpec, payloads):
    import aiohttp
    import tritonclient.http as httpclient

    if spec.target == "triton-http":
        bodies = []
        for payload in payloads:
            inputs = []
            for name, array in payload.items():
                tensor = httpclient.InferInput(name, list(array.shape), _datatype(array))
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
            headers = {"Content-Type": "application/octet-stream"}
            if json_size is not None:
                headers["Inference-Header-Content-Length"] = str(json_size)
            bodies.append((body, headers))
        path = f"http://{spec.url}/v2/models/{spec.model}/infer"
    else:
        bodies = [(json.dumps({name: array.tolist() for name, array in p.items()}).encode(),
                   {"Content-Type": "application/json"}) for p in payloads]
        path = f"http://{spec.url}/predict"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=spec.concurrency, force_close=False),
                                    timeout=aiohttp.ClientTimeout(total=spec.timeout_s))

    async def send(i: int) -> None:
        body, headers = bodies[i % len(bodies)]
        async with session.post(path, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")

    return send, session.close


async def _drive(spec: LoadSpec) -> dict:
    payloads = load_payloads(spec.payload_file)
    make = _grpc_sender if spec.target == "triton-grpc" else _http_sender
    send, close = await make(spec, payloads)
    counter = itertools.count()
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    t_start = time.perf_counter()
    t_measure = t_start + spec.warmup_s
    t_end = t_measure + spec.duration_s

    async def worker() -> None:
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            i = next(counter)
            try:
                await send(i)
                ok = True
            except Exception as exc:  # every failure is counted by kind, none stops the run
                ok = False
                kind = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            done = time.perf_counter()
            if now >= t_measure and done <= t_end:
                if ok:
                    latencies.append((done - now) * 1000.0)
                else:
                    errors[kind] += 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await close()
    measured = min(time.perf_counter(), t_end) - t_measure
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "latencies_ms": latencies,
        "errors": dict(errors),
        "throughput_rps": len(latencies) / measured if measured > 0 else 0.0,
        "measured_s": measured,
        "cpu_cores": cpu / (time.perf_counter() - t_start),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.loadgen SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = LoadSpec.model_validate_json(fh.read())
    result = asyncio.run(_drive(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
