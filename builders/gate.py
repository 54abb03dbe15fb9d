"""The promotion gate: a candidate is published only if it matches PyTorch and is no worse than what is serving.

Two conditions, both reported with their numbers: parity of the exported graph against PyTorch on held-out inputs
(:mod:`builders.parity`), and held-out accuracy no lower than the serving version's by more than
``gate.max_accuracy_drop``. Both versions are evaluated by ONNX Runtime on the same held-out split when the serving
version was built from the same data (same ``data_version`` and tokenizer); otherwise the serving version's recorded
accuracy is used and the report says so. A failed gate raises :class:`common.errors.GateFailure` (exit status 3).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import GateFailure, UserError
from builders.repository import read_lineage, serving_version
from builders.runners import accuracy, heldout_batches, ort_runner, ort_session


@dataclass
class ServingBaseline:
    version: int
    accuracy: float | None
    how: str  # "re-evaluated on the same held-out split" / "recorded in its lineage" / why not comparable


@dataclass
class GateDecision:
    passed: bool
    candidate_accuracy: float
    max_accuracy_drop: float
    parity_passed: bool
    baseline: ServingBaseline | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.baseline is None:
            against = "no version is serving yet"
        elif self.baseline.accuracy is None:
            against = f"serving v{self.baseline.version} not comparable ({self.baseline.how})"
        else:
            against = f"serving v{self.baseline.version} {self.baseline.accuracy:.4f} ({self.baseline.how})"
        text = f"{verdict}: accuracy {self.candidate_accuracy:.4f} vs {against}, margin {self.max_accuracy_drop}"
        return text + ("; " + "; ".join(self.reasons) if self.reasons else "")


def serving_baseline(model_dir: Path, exported, splits, heldout: dict, batch_size: int) -> ServingBaseline | None:
    """Accuracy of the version Triton serves now, measured like the candidate's whenever that is meaningful."""
    number = serving_version(model_dir)
    if number is None:
        return None
    version_dir = model_dir / str(number)
    lineage = read_lineage(version_dir)
    recorded = lineage.get("heldout", {})
    same_data = recorded and all(recorded.get(k) == heldout.get(k) for k in ("data_version", "tokenizer_sha256", "split"))
    onnx_path = version_dir / "model.onnx"
    if same_data and onnx_path.is_file():
        try:
            runner = ort_runner(ort_session(onnx_path), [t.name for t in exported.manifest.inputs],
                                [t.name for t in exported.manifest.outputs])
            value = accuracy(runner, heldout_batches(exported.spec, splits.test, batch_size))
            return ServingBaseline(number, round(value, 6), "re-evaluated on the same held-out split")
        except (UserError, Exception) as exc:  # an unreadable serving file must not crash the gate
            return ServingBaseline(number, recorded.get("accuracy"), f"recorded in its lineage; re-evaluation failed: {exc}")
    if recorded.get("accuracy") is not None:
        return ServingBaseline(number, recorded["accuracy"], "recorded in its lineage (built from different held-out data)")
    return ServingBaseline(number, None, f"{version_dir / 'lineage.json'} records no held-out accuracy")


def decide(parity_passed: bool, parity_reasons: list[str], candidate_accuracy: float,
           baseline: ServingBaseline | None, max_accuracy_drop: float) -> GateDecision:
    reasons = [f"parity: {r}" for r in parity_reasons] if not parity_passed else []
    if baseline is not None and baseline.accuracy is not None:
        if candidate_accuracy < baseline.accuracy - max_accuracy_drop:
            reasons.append(f"held-out accuracy {candidate_accuracy:.4f} is below serving version {baseline.version}'s "
                           f"{baseline.accuracy:.4f} by {baseline.accuracy - candidate_accuracy:.4f} "
                           f"(gate.max_accuracy_drop {max_accuracy_drop})")
    return GateDecision(not reasons, round(candidate_accuracy, 6), max_accuracy_drop, parity_passed, baseline, reasons)


def enforce(decision: GateDecision, model: str) -> None:
    if not decision.passed:
        raise GateFailure(f"promotion gate refused {model!r}: " + "; ".join(decision.reasons)
                          + "; nothing was published, the serving version is unchanged")
