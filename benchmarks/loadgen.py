"""A lean closed-loop load generator for side-by-side comparisons (``python -m benchmarks.loadgen SPEC.json``).

``compare`` needs one load generator that is the same for every served configuration and costs as little CPU as
possible (on two cores it competes with the server), so this is asyncio with pre-encoded requests: ``concurrency``
workers each send a request, wait for the answer, and send the next, for ``duration_s`` after ``warmup_s``.
At concurrency 1 it makes plain blocking calls instead (one request at a time needs no event loop, and on a slow
machine the loop's own overhead would be measured as server latency). It runs in its own process so its CPU use is
measured apart from the server's, and prints one JSON object: every latency in milliseconds, errors by kind,
requests/s and its own CPU seconds.

Targets: ``triton-grpc`` (grpc.aio with pre-serialized ``ModelInferRequest`` bytes), ``triton-http`` (aiohttp with Triton's binary tensor bodies),
``fastapi`` (aiohttp posting JSON to the baseline service in benchmarks/baseline_fastapi.py); for embedding models
``fastapi-embed`` (``{"sentences": [...]}`` to benchmarks/peers/fastapi_embed.py) and ``infinity`` (Infinity's
OpenAI-style ``{"input": [...], "model": ...}``), both built from text payloads.
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

    target: Literal["triton-grpc", "triton-http", "triton-http-json", "fastapi", "fastapi-embed", "infinity"]
    url: str = Field(description="host:port")
    model: str
    payload_file: str
    concurrency: int = Field(ge=1)
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(10.0, gt=0)


def error_kind(exc: BaseException) -> str:
    """How failures are grouped in results: the exception type and the first line of its message."""
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


class Window:
    """The measured part of a run: every request that finishes between the end of the warm-up and the end is recorded.

    Counting by finish time is what makes throughput right when a request takes a good part of the window: counting
    only requests that also *start* inside the window leaves out one request per caller and favours short ones (a
    long request started late cannot finish in time), so slow points read low and fast."""

    def __init__(self, spec: LoadSpec):
        self.t_start = time.perf_counter()
        self.t_measure = self.t_start + spec.warmup_s
        self.t_end = self.t_measure + spec.duration_s
        self.latencies: list[float] = []
        self.errors: collections.Counter = collections.Counter()
        self._cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    def over(self, now: float) -> bool:
        return now >= self.t_end

    def record(self, started: float, done: float, error: BaseException | None) -> None:
        if self.t_measure <= done <= self.t_end:
            if error is None:
                self.latencies.append((done - started) * 1000.0)
            else:
                self.errors[error_kind(error)] += 1

    def result(self) -> dict:
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - self._cpu0.ru_utime) + (cpu1.ru_stime - self._cpu0.ru_stime)
        measured = min(time.perf_counter(), self.t_end) - self.t_measure
        return {"latencies_ms": self.latencies, "errors": dict(self.errors),
                "throughput_rps": len(self.latencies) / measured if measured > 0 else 0.0, "measured_s": measured,
                "cpu_cores": cpu / (time.perf_counter() - self.t_start)}


def _datatype(array) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


def serialized_infer_request(model: str, payload: dict) -> bytes:
    """One ``ModelInferRequest`` serialized once: the load generator then sends bytes, not protobuf objects."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in payload.items():
        request.inputs.add(name=name, datatype=_datatype(array), shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if array.dtype == object else array.tobytes()
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


async def _grpc_sender(spec: LoadSpec, payloads):
    """gRPC with pre-serialized requests on one channel (HTTP/2 multiplexes the concurrent calls)."""
    import grpc

    channel = grpc.aio.insecure_channel(spec.url, options=[("grpc.max_receive_message_length", 64 << 20)])
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
    requests = [serialized_infer_request(spec.model, payload) for payload in payloads]

    async def send(i: int) -> None:
        await infer(requests[i % len(requests)], timeout=spec.timeout_s)

    return send, channel.close


def http_bodies(spec: LoadSpec, payloads) -> tuple[str, list[tuple[bytes, dict[str, str]]]]:
    """Request path and pre-encoded bodies for the HTTP targets."""
    import tritonclient.http as httpclient

    if spec.target in ("fastapi-embed", "infinity"):
        texts = [[t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in p["text"].ravel()] for p in payloads]
        if spec.target == "infinity":
            return "/embeddings", [(json.dumps({"input": t, "model": spec.model}).encode(),
                                    {"Content-Type": "application/json"}) for t in texts]
        return "/embed", [(json.dumps({"sentences": t}).encode(), {"Content-Type": "application/json"}) for t in texts]
    if spec.target == "fastapi":
        return "/predict", [(json.dumps({name: array.tolist() for name, array in p.items()}).encode(),
                             {"Content-Type": "application/json"}) for p in payloads]
    route = f"/v2/models/{spec.model}/infer"
    if spec.target == "triton-http-json":  # the plain KServe v2 JSON body: JSON tensors in, JSON tensors out
        return route, [(json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": _datatype(array),
                                                "data": array.ravel().tolist()} for name, array in p.items()]}).encode(),
                        {"Content-Type": "application/json"}) for p in payloads]
    bodies = []
    for payload in payloads:  # binary tensor data in, binary outputs back (tritonclient asks for them)
        inputs = []
        for name, array in payload.items():
            tensor = httpclient.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}
        bodies.append((body, headers))
    return route, bodies


async def _http_sender(spec: LoadSpec, payloads):
    import aiohttp

    route, bodies = http_bodies(spec, payloads)
    path = f"http://{spec.url}{route}"
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
    window = Window(spec)

    async def worker() -> None:
        while True:
            started = time.perf_counter()
            if window.over(started):
                return
            error = None
            try:
                await send(next(counter))
            except Exception as exc:  # every failure is counted by kind, none stops the run
                error = exc
            window.record(started, time.perf_counter(), error)

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    result = window.result()
    await close()
    return result


def _blocking_sender(spec: LoadSpec, payloads):
    """Concurrency 1: a blocking client on one kept-alive connection."""
    if spec.target == "triton-grpc":
        import grpc

        channel = grpc.insecure_channel(spec.url, options=[("grpc.max_receive_message_length", 64 << 20)])
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        requests = [serialized_infer_request(spec.model, payload) for payload in payloads]
        return (lambda i: infer(requests[i % len(requests)], timeout=spec.timeout_s)), channel.close
    import http.client

    host, port = spec.url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=spec.timeout_s)
    path, bodies = http_bodies(spec, payloads)

    def send(i: int) -> None:
        body, headers = bodies[i % len(bodies)]
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")

    return send, connection.close


def _drive_blocking(spec: LoadSpec) -> dict:
    send, close = _blocking_sender(spec, load_payloads(spec.payload_file))
    window = Window(spec)
    i = 0
    while True:
        started = time.perf_counter()
        if window.over(started):
            break
        error = None
        try:
            send(i)
        except Exception as exc:  # every failure is counted by kind, none stops the run
            error = exc
        window.record(started, time.perf_counter(), error)
        i += 1
    result = window.result()
    close()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.loadgen SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = LoadSpec.model_validate_json(fh.read())
    result = _drive_blocking(spec) if spec.concurrency == 1 else asyncio.run(_drive(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
