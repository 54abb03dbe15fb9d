"""INT8 for the CPU path: ONNX Runtime dynamic quantization, accepted only if accuracy holds.

Dynamic quantization stores weights as INT8 and quantizes activations on the fly, which shrinks the file and speeds up
MatMul/Gemm-heavy models on CPU without calibration data. It can also cost accuracy, so every INT8 file is measured
against FP32 on the held-out split, and refused (not published, with the reason in the report) when the drop exceeds
``quantize.max_accuracy_drop``. Size and in-process latency are reported beside it so the trade is visible.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from common.files import sha256_file
from builders.runners import accuracy, heldout_batches, latency, ort_runner, ort_session
from builders.settings import QuantizeConfig


@dataclass
class QuantizeReport:
    file: str
    sha256: str
    fp32_size_bytes: int
    int8_size_bytes: int
    fp32_accuracy: float
    int8_accuracy: float
    fp32_latency: dict
    int8_latency: dict
    max_accuracy_drop: float
    accepted: bool
    reason: str
    op_types: list[str] = field(default_factory=list)

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["accuracy_drop"] = round(self.accuracy_drop, 6)
        return data

    def summary(self) -> str:
        ratio = self.fp32_size_bytes / max(self.int8_size_bytes, 1)
        speed = self.fp32_latency["p50_ms"] / max(self.int8_latency["p50_ms"], 1e-9)
        verdict = "accepted" if self.accepted else "REFUSED"
        return (f"{verdict}: {self.int8_size_bytes / 1e6:.2f} MB ({ratio:.1f}x smaller), {speed:.2f}x the FP32 speed at "
                f"batch {self.fp32_latency['batch_size']}, accuracy {self.int8_accuracy:.4f} vs FP32 "
                f"{self.fp32_accuracy:.4f} ({-self.accuracy_drop:+.4f}); {self.reason}")


def quantize_file(fp32_path: Path, int8_path: Path, config: QuantizeConfig) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice through the root logger
    tmp = int8_path.with_name(f".{int8_path.name}.tmp")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(str(fp32_path), str(tmp), op_types_to_quantize=list(config.op_types),
                             per_channel=config.per_channel, reduce_range=config.reduce_range,
                             weight_type=QuantType.QInt8)
        tmp.replace(int8_path)
    except Exception as exc:
        raise UserError(f"INT8 dynamic quantization of {fp32_path} failed: {str(exc).splitlines()[0]}") from None
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)


def decide(fp32_accuracy: float, int8_accuracy: float, max_drop: float) -> tuple[bool, str]:
    """Accept INT8 only when held-out accuracy drops by at most ``max_drop`` (absolute)."""
    drop = fp32_accuracy - int8_accuracy
    if drop <= max_drop + 1e-12:
        return True, f"accuracy drop {drop:.4f} is within the margin {max_drop}"
    return False, f"accuracy drop {drop:.4f} exceeds quantize.max_accuracy_drop {max_drop}: not published"


def build_int8(exported, splits, fp32_path: str | Path, int8_path: str | Path, config: QuantizeConfig,
               batch_size: int, fp32_accuracy: float | None = None) -> QuantizeReport:
    """Quantize, then compare size, latency and held-out accuracy with FP32 and decide."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    quantize_file(fp32_path, int8_path, config)
    names_in = [t.name for t in exported.manifest.inputs]
    names_out = [t.name for t in exported.manifest.outputs]
    fp32 = ort_runner(ort_session(fp32_path), names_in, names_out)
    int8 = ort_runner(ort_session(int8_path), names_in, names_out)
    if fp32_accuracy is None:
        fp32_accuracy = accuracy(fp32, heldout_batches(exported.spec, splits.test, batch_size))
    int8_accuracy = accuracy(int8, heldout_batches(exported.spec, splits.test, batch_size))
    sample = next(heldout_batches(exported.spec, splits.test, config.latency_batch_size)).inputs
    fp32_latency = latency(fp32, sample, config.latency_iterations)
    int8_latency = latency(int8, sample, config.latency_iterations)
    accepted, reason = decide(fp32_accuracy, int8_accuracy, config.max_accuracy_drop)
    return QuantizeReport(int8_path.name, sha256_file(int8_path), fp32_path.stat().st_size, int8_path.stat().st_size,
                          round(fp32_accuracy, 6), round(int8_accuracy, 6), fp32_latency, int8_latency,
                          config.max_accuracy_drop, accepted, reason, list(config.op_types))
