"""INT8 for the CPU path: ONNX Runtime dynamic quantization, accepted only if the task's quality holds.

Dynamic quantization stores weights as INT8 and quantizes activations on the fly, which shrinks the file and speeds up
MatMul/Gemm-heavy models on CPU without calibration data. It can also cost quality, so every INT8 file is measured
against FP32 on the held-out data and refused (not published, with the reason in the report) when:

* the task's quality number (accuracy, recall@1) drops by more than ``quantize.max_accuracy_drop``;
* classification without labels: the predicted class agrees with FP32's on fewer than ``min_argmax_agreement``;
* embedding: any example's INT8 vector has a cosine below ``quantize.min_cosine`` to FP32's, or to the external
  reference's (sentence-transformers) when the source has one, or nearest neighbours agree too rarely;
* generic: an output leaves ``quantize.tolerance`` (element-wise).

Size and in-process latency are reported beside it so the trade is visible. MatMuls fed by a GELU (a transformer's
feed-forward down-projection) stay FP32 (``quantize.fp32_after_gelu``): their inputs have outliers that per-tensor
INT8 activations clip, which alone took all-MiniLM-L6-v2 from cosine 0.99 to 0.91.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from common.files import sha256_file
from builders.metrics import Quality, first_outputs, quality
from builders.parity import compare, cosines
from builders.runners import Runner, latency, memoized, ort_runner, ort_session
from builders.settings import QuantizeConfig


@dataclass
class QuantizeReport:
    file: str
    sha256: str
    fp32_size_bytes: int
    int8_size_bytes: int
    fp32_accuracy: float | None
    int8_accuracy: float | None
    fp32_latency: dict
    int8_latency: dict
    max_accuracy_drop: float
    accepted: bool
    reason: str
    op_types: list[str] = field(default_factory=list)
    metric: str | None = "accuracy"
    task: str = "classification"
    parity: dict = field(default_factory=dict)  # INT8 vs FP32, judged by the task
    reference: dict | None = None  # embeddings: INT8 vs the external reference
    kept_fp32: list[str] = field(default_factory=list)  # MatMuls left in FP32 (fed by a GELU)

    @property
    def accuracy_drop(self) -> float | None:
        if self.fp32_accuracy is None or self.int8_accuracy is None:
            return None
        return self.fp32_accuracy - self.int8_accuracy

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        drop = self.accuracy_drop
        data["accuracy_drop"] = None if drop is None else round(drop, 6)
        return data

    def summary(self) -> str:
        ratio = self.fp32_size_bytes / max(self.int8_size_bytes, 1)
        speed = self.fp32_latency["p50_ms"] / max(self.int8_latency["p50_ms"], 1e-9)
        verdict = "accepted" if self.accepted else "REFUSED"
        quality_text = (f"{self.metric} {self.int8_accuracy:.4f} vs FP32 {self.fp32_accuracy:.4f} "
                        f"({-self.accuracy_drop:+.4f})" if self.accuracy_drop is not None else "no quality metric")
        return (f"{verdict}: {self.int8_size_bytes / 1e6:.2f} MB ({ratio:.1f}x smaller), {speed:.2f}x the FP32 speed at "
                f"batch {self.fp32_latency['batch_size']}, {quality_text}; {self.reason}")


_GELU = ("Erf", "Tanh", "Gelu", "FastGelu")
_BOUNDARY = ("MatMul", "Gemm", "LayerNormalization", "Softmax", "Conv")  # a GELU behind one of these feeds another op


def gelu_fed_matmuls(model, hops: int = 6) -> list[str]:
    """Names of MatMul nodes whose activation input is a GELU's output (``Erf``/``Tanh``/``Gelu`` within ``hops``
    element-wise producers upstream, not looking past another MatMul, norm or softmax): a transformer's feed-forward
    down-projections, which INT8 activations hurt most."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {i.name for i in model.graph.initializer}

    def gelu_upstream(value: str) -> bool:
        frontier = [value]
        for _ in range(hops):
            nodes = [producers[v] for v in frontier if v in producers]
            if any(n.op_type in _GELU for n in nodes):
                return True
            frontier = [i for n in nodes if n.op_type not in _BOUNDARY for i in n.input if i not in constants]
            if not frontier:
                return False
        return False

    return [node.name for node in model.graph.node if node.op_type in ("MatMul", "Gemm")
            and any(i not in constants and gelu_upstream(i) for i in node.input)]


def quantize_file(fp32_path: Path, int8_path: Path, config: QuantizeConfig) -> list[str]:
    """Quantize; returns the MatMul/Gemm nodes kept in FP32 (``quantize.fp32_after_gelu``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = gelu_fed_matmuls(onnx.load(str(fp32_path))) if config.fp32_after_gelu else []

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice through the root logger
    tmp = int8_path.with_name(f".{int8_path.name}.tmp")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(str(fp32_path), str(tmp), op_types_to_quantize=list(config.op_types),
                             per_channel=config.per_channel, reduce_range=config.reduce_range,
                             weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        tmp.replace(int8_path)
    except Exception as exc:
        raise UserError(f"INT8 dynamic quantization of {fp32_path} failed: {str(exc).splitlines()[0]}") from None
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return keep


def decide(fp32_accuracy: float, int8_accuracy: float, max_drop: float) -> tuple[bool, str]:
    """Accept INT8 only when the held-out quality drops by at most ``max_drop`` (absolute)."""
    drop = fp32_accuracy - int8_accuracy
    if drop <= max_drop + 1e-12:
        return True, f"accuracy drop {drop:.4f} is within the margin {max_drop}"
    return False, f"accuracy drop {drop:.4f} exceeds quantize.max_accuracy_drop {max_drop}: not published"


def build_int8(source, heldout, fp32_path: str | Path, int8_path: str | Path, config: QuantizeConfig,
               batch_size: int, fp32_quality: Quality | None = None, fp32_runner: Runner | None = None) -> QuantizeReport:
    """Quantize, then compare size, latency and the task's quality with FP32, and decide (``fp32_runner``: the FP32
    graph's runner when the caller has one whose answers are memoized)."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    kept_fp32 = quantize_file(fp32_path, int8_path, config)
    names_in = source.signature.input_names
    names_out = source.signature.output_names
    task = source.task
    fp32_session = ort_runner(ort_session(fp32_path), names_in, names_out)
    fp32 = fp32_runner or memoized(fp32_session)
    int8_session = ort_runner(ort_session(int8_path), names_in, names_out)
    int8 = memoized(int8_session)
    if fp32_quality is None:
        fp32_quality = quality(task, fp32, heldout, batch_size)
    int8_quality = quality(task, int8, heldout, batch_size)
    parity = compare(fp32, int8, heldout.batches(batch_size), names_out, lambda _name: config.tolerance,
                     config.min_argmax_agreement, "onnxruntime:fp32", f"onnxruntime:{int8_path.name}", task,
                     heldout.pairs, config.min_cosine, config.min_neighbour_agreement)
    reasons, accepted = [], True
    if fp32_quality.value is not None and int8_quality.value is not None:
        ok, why = decide(fp32_quality.value, int8_quality.value, config.max_accuracy_drop)
        accepted &= ok
        reasons.append(why.replace("accuracy", fp32_quality.name or "accuracy", 1))
    if task == "classification" and fp32_quality.value is None:
        ok = parity.argmax_agreement >= config.min_argmax_agreement
        accepted &= ok
        reasons.append(f"predicted class agrees with FP32 on {parity.argmax_agreement:.2%} (expected >= "
                       f"{config.min_argmax_agreement:.2%})")
    if task in ("embedding", "generic"):
        accepted &= parity.passed
        reasons.append(parity.summary() if parity.passed else "vs FP32: " + "; ".join(parity.failures()))
    reference = None
    vectors = source.reference_embeddings(heldout.texts) if task == "embedding" and heldout.texts else None
    if vectors is not None:
        values = cosines(vectors, first_outputs(int8, heldout, batch_size))
        reference = {"reference": "sentence-transformers", "samples": int(len(values)),
                     "min_cosine": round(float(values.min()), 7), "mean_cosine": round(float(values.mean()), 7),
                     "threshold": config.min_cosine}
        ok = reference["min_cosine"] >= config.min_cosine
        accepted &= ok
        reasons.append(f"cosine to sentence-transformers min {reference['min_cosine']:.5f} "
                       f"({'>=' if ok else 'below'} {config.min_cosine})")
    sample = next(heldout.batches(config.latency_batch_size)).inputs
    fp32_latency = latency(fp32_session, sample, config.latency_iterations)  # real runs, not the memo
    int8_latency = latency(int8_session, sample, config.latency_iterations)
    reason = "; ".join(reasons) + ("" if accepted else ": not published")
    return QuantizeReport(int8_path.name, sha256_file(int8_path), fp32_path.stat().st_size, int8_path.stat().st_size,
                          None if fp32_quality.value is None else round(fp32_quality.value, 6),
                          None if int8_quality.value is None else round(int8_quality.value, 6),
                          fp32_latency, int8_latency, config.max_accuracy_drop, accepted, reason,
                          list(config.op_types), fp32_quality.name, task, parity.to_dict(), reference, kept_fp32)
