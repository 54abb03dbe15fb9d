"""The promotion gate: a candidate is published only if it matches its reference and is no worse than what serves.

Conditions, all reported with their numbers: parity of the exported graph against PyTorch (or, for an ONNX source,
the file as given) on held-out inputs, judged by the task (:mod:`builders.parity`); for embeddings with an external
reference (sentence-transformers), the cosine to it; and the task's held-out quality (:mod:`builders.metrics`:
accuracy, recall@1) no lower than the serving version's by more than ``gate.max_accuracy_drop``. Both versions are
evaluated by ONNX Runtime on the same held-out data when the serving version was built from the same data (same
``data_version`` and tokenizer); otherwise the serving version's recorded value is used and the report says so.
Without labelled held-out data there is no quality number: the gate is parity only, and the report says accuracy
gating is off. A failed gate raises :class:`common.errors.GateFailure` (exit status 3).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import GateFailure, UserError
from builders.repository import read_lineage, serving_version
from builders.metrics import quality
from builders.runners import ort_runner, ort_session


@dataclass
class ServingBaseline:
    version: int
    accuracy: float | None
    how: str  # "re-evaluated on the same held-out split" / "recorded in its lineage" / why not comparable


@dataclass
class GateDecision:
    passed: bool
    candidate_accuracy: float | None  # the task's quality number (None: accuracy gating off)
    max_accuracy_drop: float
    parity_passed: bool
    baseline: ServingBaseline | None
    reasons: list[str] = field(default_factory=list)
    metric: str | None = "accuracy"

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.candidate_accuracy is None:
            return f"{verdict}: parity only (accuracy gating off)" + ("; " + "; ".join(self.reasons) if self.reasons else "")
        if self.baseline is None:
            against = "no version is serving yet"
        elif self.baseline.accuracy is None:
            against = f"serving v{self.baseline.version} not comparable ({self.baseline.how})"
        else:
            against = f"serving v{self.baseline.version} {self.baseline.accuracy:.4f} ({self.baseline.how})"
        text = f"{verdict}: {self.metric} {self.candidate_accuracy:.4f} vs {against}, margin {self.max_accuracy_drop}"
        return text + ("; " + "; ".join(self.reasons) if self.reasons else "")


def serving_baseline(model_dir: Path, source, data, heldout: dict, batch_size: int) -> ServingBaseline | None:
    """The quality of the version Triton serves now, measured like the candidate's whenever that is meaningful.

    ``data`` is the candidate's :class:`builders.sources.base.HeldOut`; ``heldout`` its identity as recorded."""
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
            runner = ort_runner(ort_session(onnx_path), source.signature.input_names, source.signature.output_names)
            value = quality(source.task, runner, data, batch_size).value
            if value is not None:
                return ServingBaseline(number, round(value, 6), "re-evaluated on the same held-out split")
        except (UserError, Exception) as exc:  # an unreadable serving file must not crash the gate
            return ServingBaseline(number, recorded.get("accuracy"), f"recorded in its lineage; re-evaluation failed: {exc}")
    if recorded.get("accuracy") is not None:
        return ServingBaseline(number, recorded["accuracy"], "recorded in its lineage (built from different held-out data)")
    return ServingBaseline(number, None, f"{version_dir / 'lineage.json'} records no held-out accuracy")


def decide(parity_passed: bool, parity_reasons: list[str], candidate_accuracy: float | None,
           baseline: ServingBaseline | None, max_accuracy_drop: float, metric: str | None = "accuracy",
           other_reasons: list[str] = ()) -> GateDecision:
    reasons = [f"parity: {r}" for r in parity_reasons] if not parity_passed else []
    reasons += list(other_reasons)
    if candidate_accuracy is not None and baseline is not None and baseline.accuracy is not None:
        if candidate_accuracy < baseline.accuracy - max_accuracy_drop:
            reasons.append(f"held-out {metric} {candidate_accuracy:.4f} is below serving version {baseline.version}'s "
                           f"{baseline.accuracy:.4f} by {baseline.accuracy - candidate_accuracy:.4f} "
                           f"(gate.max_accuracy_drop {max_accuracy_drop})")
    value = None if candidate_accuracy is None else round(candidate_accuracy, 6)
    return GateDecision(not reasons, value, max_accuracy_drop, parity_passed, baseline, reasons, metric)


def enforce(decision: GateDecision, model: str) -> None:
    if not decision.passed:
        raise GateFailure(f"promotion gate refused {model!r}: " + "; ".join(decision.reasons)
                          + "; nothing was published, the serving version is unchanged")
