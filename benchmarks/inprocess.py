"""In-process baselines for ``compare``: PyTorch eager and ONNX Runtime called directly, no server in between.

Two ways to use the same cores are measured, because "the best in-process throughput" depends on it:

* ``threads``: ``concurrency`` threads each run batch-1 calls (what an app with concurrent requests does);
  intra-op threads per call = cores // concurrency (at least 1), so the machine is not oversubscribed;
* ``batched``: one caller runs batches of ``concurrency`` requests (what perfect dynamic batching could reach);
  intra-op threads = all cores. Latency is that of the whole batch, which each request in it would see.

Throughput is in sequences (requests) per second in both modes.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from benchmarks.cpu_usage import own_cpu_seconds
from benchmarks.loadgen import error_kind

Mode = Literal["threads", "batched"]


@dataclass
class Measurement:
    latencies_ms: list[float]
    throughput_rps: float
    cpu_cores: float
    errors: dict[str, int]


def _measure(call: Callable[[int], None], callers: int, per_call: int, duration_s: float, warmup_s: float) -> Measurement:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + duration_s
    counter = iter(range(10**12))

    def loop() -> None:
        local: list[float] = []
        while True:
            start = time.perf_counter()
            if start >= t_end:
                break
            with lock:
                i = next(counter)
            try:
                call(i)
            except Exception as exc:  # counted by kind, like a server error
                with lock:
                    key = error_kind(exc)
                    errors[key] = errors.get(key, 0) + 1
                continue
            done = time.perf_counter()
            if t_measure <= done <= t_end:  # by finish time, as benchmarks.loadgen.Window counts
                local.append((done - start) * 1000.0)
        with lock:
            latencies.extend(local)

    cpu0, wall0 = own_cpu_seconds(), time.perf_counter()
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cores = (own_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    return Measurement(latencies, len(latencies) * per_call / duration_s, round(cores, 3), errors)


def _batches(payloads: list[dict[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """Concatenate consecutive payloads into batches (inputs must share their non-batch shape, e.g. fixed seq len)."""
    out = []
    for start in range(0, len(payloads) - size + 1, size):
        group = payloads[start:start + size]
        out.append({name: np.concatenate([p[name] for p in group]) for name in group[0]})
    return out or [payloads[0]]


def run_onnxruntime(onnx_path: str, payloads, concurrency: int, mode: Mode, duration_s: float,
                    warmup_s: float, provider: str = "CPUExecutionProvider") -> Measurement:
    import onnxruntime as ort

    cores = os.cpu_count() or 1
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = cores if mode == "batched" else max(1, cores // concurrency)
    session = ort.InferenceSession(onnx_path, sess_options=options, providers=[provider])
    feeds = _batches(payloads, concurrency) if mode == "batched" else payloads

    def call(i: int) -> None:
        session.run(None, feeds[i % len(feeds)])

    callers, per_call = (1, concurrency) if mode == "batched" else (concurrency, 1)
    return _measure(call, callers, per_call, duration_s, warmup_s)


def run_torch(model, payloads, concurrency: int, mode: Mode, duration_s: float, warmup_s: float,
              device: str = "cpu") -> Measurement:
    import torch

    cores = os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(cores if mode == "batched" else max(1, cores // concurrency))
    feeds = _batches(payloads, concurrency) if mode == "batched" else payloads
    tensors = [tuple(torch.from_numpy(v).to(device) for v in feed.values()) for feed in feeds]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call(i: int) -> None:
        with torch.inference_mode():
            model(*tensors[i % len(tensors)])
        sync()  # GPU work is asynchronous: a call ends when its results exist

    try:
        callers, per_call = (1, concurrency) if mode == "batched" else (concurrency, 1)
        return _measure(call, callers, per_call, duration_s, warmup_s)
    finally:
        torch.set_num_threads(previous)


# -- embedding models: raw sentences in, unit vectors out ---------------------------------------------------------
def sentence_batches(sentences: list[str], size: int) -> list[list[str]]:
    """Consecutive sentences in groups of ``size`` (what ideal batching of ``size`` concurrent requests would run)."""
    return [sentences[start:start + size] for start in range(0, len(sentences) - size + 1, size)] or [sentences[:size]]


def run_sentence_transformers(model, sentences: list[str], batch: int, duration_s: float, warmup_s: float
                              ) -> Measurement:
    """``SentenceTransformer.encode`` of ``batch`` sentences per call, tokenization included, all cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    groups = sentence_batches(sentences, batch)

    def call(i: int) -> None:
        model.encode(groups[i % len(groups)], batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    try:
        return _measure(call, 1, batch, duration_s, warmup_s)
    finally:
        torch.set_num_threads(previous)


def onnxruntime_session(onnx_path: str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    return ort.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])


def run_onnxruntime_text(session, encoder, sentences: list[str], batch: int, duration_s: float, warmup_s: float
                         ) -> Measurement:
    """Tokenize ``batch`` sentences (padded to the longest) and run the encoder graph on them: the in-process limit
    of a server that batches ideally. ``encoder`` is a :class:`clients.embeddings.TokenEncoder`."""
    groups = sentence_batches(sentences, batch)
    names = [i.name for i in session.get_inputs()]

    def call(i: int) -> None:
        arrays = encoder.encode(groups[i % len(groups)])
        session.run(None, {name: arrays[name] for name in names})

    return _measure(call, 1, batch, duration_s, warmup_s)
