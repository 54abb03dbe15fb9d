"""Numerical parity between two runners on held-out inputs, with a tolerance per output.

A report says, per output, the largest absolute and relative error, how many elements fell outside
``atol + rtol * |reference|``, whether anything was NaN/Inf (the FP16 failure mode), and how often the predicted class
agreed. ``passed`` is the single bit the promotion gate reads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from builders.runners import Batch, Runner
from builders.settings import Tolerance


@dataclass
class OutputParity:
    name: str
    atol: float
    rtol: float
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    elements: int = 0
    violations: int = 0
    non_finite: int = 0

    @property
    def passed(self) -> bool:
        return self.violations == 0 and self.non_finite == 0


@dataclass
class ParityReport:
    reference: str
    candidate: str
    samples: int = 0
    argmax_agreement: float = 1.0
    min_argmax_agreement: float = 1.0
    outputs: list[OutputParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and self.argmax_agreement >= self.min_argmax_agreement

    def failures(self) -> list[str]:
        reasons = []
        for o in self.outputs:
            if o.non_finite:
                reasons.append(f"output {o.name!r} has {o.non_finite} NaN/Inf values")
            if o.violations:
                reasons.append(f"output {o.name!r}: {o.violations}/{o.elements} elements outside atol={o.atol:g} "
                               f"rtol={o.rtol:g} (max abs error {o.max_abs_error:.3g})")
        if self.argmax_agreement < self.min_argmax_agreement:
            reasons.append(f"predicted class agrees on {self.argmax_agreement:.2%} of samples "
                           f"(expected >= {self.min_argmax_agreement:.2%})")
        return reasons

    def summary(self) -> str:
        worst = ", ".join(f"{o.name} max|Δ| {o.max_abs_error:.2e}" for o in self.outputs)
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.candidate} vs {self.reference} on {self.samples} samples: {worst}; argmax agreement {self.argmax_agreement:.2%}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        for out, o in zip(data["outputs"], self.outputs):
            out["passed"] = o.passed
        return data


def compare(reference: Runner, candidate: Runner, batches: Iterable[Batch], output_names: Sequence[str],
            tolerance: Callable[[str], Tolerance], min_argmax_agreement: float,
            reference_name: str, candidate_name: str) -> ParityReport:
    """Run both on every batch and accumulate per-output errors; the first output is taken as the class scores."""
    report = ParityReport(reference_name, candidate_name, min_argmax_agreement=min_argmax_agreement)
    per_output = {}
    for name in output_names:
        tol = tolerance(name)
        per_output[name] = OutputParity(name, tol.atol, tol.rtol)
    agree = 0
    for batch in batches:
        expected = reference(batch.inputs)
        actual = candidate(batch.inputs)
        for name, want, got in zip(output_names, expected, actual):
            stats = per_output[name]
            want = np.asarray(want, dtype=np.float64)
            got = np.asarray(got, dtype=np.float64)
            if want.shape != got.shape:
                stats.violations += int(want.size)
                stats.elements += int(want.size)
                stats.max_abs_error = float("inf")
                continue
            finite = np.isfinite(got)
            stats.non_finite += int((~finite).sum())
            diff = np.abs(got - want)
            diff = np.where(finite, diff, np.inf)
            stats.elements += int(want.size)
            stats.violations += int((diff > stats.atol + stats.rtol * np.abs(want)).sum())
            if diff.size:
                stats.max_abs_error = max(stats.max_abs_error, float(diff.max()))
                rel = diff / np.maximum(np.abs(want), 1e-12)
                stats.max_rel_error = max(stats.max_rel_error, float(rel.max()))
        agree += int((np.asarray(expected[0]).argmax(-1) == np.asarray(actual[0]).argmax(-1)).sum())
        report.samples += int(np.asarray(expected[0]).shape[0])
    report.outputs = list(per_output.values())
    report.argmax_agreement = agree / report.samples if report.samples else 0.0
    return report
