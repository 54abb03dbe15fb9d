"""Run the same held-out inputs through PyTorch, ONNX Runtime (or a TensorRT engine) and measure them alike.

Every comparison in the builders (parity, INT8 accuracy, the promotion gate) goes through these few functions, so the
numbers in a report are computed one way: held-out batches come from the model source's held-out data
(:class:`builders.sources.base.HeldOut`, mixed sequence lengths included), outputs are lists of numpy arrays in the
signature's output order, and accuracy is argmax of the first output (other tasks: :mod:`builders.metrics`).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from common.errors import UserError
from builders.sources.base import Batch, HeldOut

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def heldout_batches(spec, dataset, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
    """Consecutive batches of ``dataset`` (deterministic order): a :class:`HeldOut` batches itself, a training
    spec's dataset is collated by the spec."""
    if isinstance(dataset, HeldOut):
        yield from dataset.batches(batch_size, limit)
        return
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, count, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, count))]
        inputs, targets = spec.collate(samples)
        yield Batch([t.numpy() for t in inputs], targets.numpy())


def torch_runner(model) -> Runner:
    import torch

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        if isinstance(outputs, torch.Tensor):  # a single-output module
            outputs = (outputs,)
        return [o.detach().cpu().numpy() for o in outputs]

    return run


def memoized(runner: Runner) -> Runner:
    """``runner`` that answers inputs it has seen from memory: parity, quality, INT8 and the external reference run
    the same held-out batches through the same graph, and a large model must not pay for that four times."""
    import hashlib

    cache: dict[str, list[np.ndarray]] = {}

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        digest = hashlib.blake2b(digest_size=16)
        for x in inputs:
            x = np.ascontiguousarray(x)
            digest.update(f"{x.dtype.str}{x.shape}".encode())
            digest.update(x.tobytes())
        key = digest.hexdigest()
        if key not in cache:
            cache[key] = runner(inputs)
        return cache[key]

    return run


def ort_session(path: str | Path, threads: int = 1):
    """A CPU ONNX Runtime session; a :class:`UserError` naming the file if ONNX Runtime refuses it.

    One thread by default: comparisons are about numbers, and single-threaded latency compares variants fairly on a
    busy machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None


def ort_runner(session, input_names: Sequence[str], output_names: Sequence[str]) -> Runner:
    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return session.run(list(output_names), dict(zip(input_names, inputs)))

    return run


def accuracy(runner: Runner, batches: Iterable[Batch]) -> float:
    correct = total = 0
    for batch in batches:
        logits = runner(batch.inputs)[0]
        correct += int((logits.argmax(axis=-1) == batch.targets).sum())
        total += len(batch.targets)
    if not total:
        raise UserError("the held-out split is empty: cannot measure accuracy")
    return correct / total


def latency(runner: Runner, inputs: Sequence[np.ndarray], iterations: int, warmup: int = 3) -> dict[str, float]:
    """Median and p90 wall time of one call in milliseconds, and samples per second, in-process."""
    for _ in range(warmup):
        runner(inputs)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner(inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    p50 = statistics.median(times)
    batch = int(inputs[0].shape[0])
    return {"batch_size": batch, "p50_ms": round(p50, 4), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 4),
            "samples_per_s": round(batch * 1000.0 / p50, 1)}
