"""Numerical parity between two runners on held-out inputs, judged the way the model's task needs.

A report says, per output, the largest absolute and relative error, how many elements fell outside
``atol + rtol * |reference|`` and whether anything was NaN/Inf (the FP16 failure mode). What decides ``passed`` (the
single bit the promotion gate reads) depends on the task:

* ``classification``: every output within tolerance, and the predicted class agrees on enough samples;
* ``embedding``: the cosine similarity of every example's vector to the reference's is at least ``min_cosine``, and
  nearest-neighbour rankings agree (each pair's top-1 partner, or each example's nearest other example) on at least
  ``min_neighbour_agreement`` of the queries; element-wise errors are reported, not gated;
* ``generic``: every output within its atol/rtol.
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
    task: str = "classification"
    min_cosine: float | None = None  # observed, embeddings only
    mean_cosine: float | None = None
    cosine_threshold: float | None = None
    neighbour_agreement: float | None = None
    min_neighbour_agreement: float | None = None

    @property
    def passed(self) -> bool:
        if self.task == "embedding":
            return (all(o.non_finite == 0 for o in self.outputs) and self.min_cosine is not None
                    and self.min_cosine >= (self.cosine_threshold or 0.0)
                    and (self.neighbour_agreement or 0.0) >= (self.min_neighbour_agreement or 0.0))
        argmax_ok = self.task != "classification" or self.argmax_agreement >= self.min_argmax_agreement
        return all(o.passed for o in self.outputs) and argmax_ok

    def failures(self) -> list[str]:
        reasons = []
        if self.task == "embedding":
            for o in self.outputs:
                if o.non_finite:
                    reasons.append(f"output {o.name!r} has {o.non_finite} NaN/Inf values")
            if self.min_cosine is None or self.min_cosine < (self.cosine_threshold or 0.0):
                reasons.append(f"lowest per-example cosine similarity {self.min_cosine} is below "
                               f"{self.cosine_threshold}")
            if (self.neighbour_agreement or 0.0) < (self.min_neighbour_agreement or 0.0):
                reasons.append(f"nearest-neighbour rankings agree on {self.neighbour_agreement:.2%} of queries "
                               f"(expected >= {self.min_neighbour_agreement:.2%})")
            return reasons
        for o in self.outputs:
            if o.non_finite:
                reasons.append(f"output {o.name!r} has {o.non_finite} NaN/Inf values")
            if o.violations:
                reasons.append(f"output {o.name!r}: {o.violations}/{o.elements} elements outside atol={o.atol:g} "
                               f"rtol={o.rtol:g} (max abs error {o.max_abs_error:.3g})")
        if self.task == "classification" and self.argmax_agreement < self.min_argmax_agreement:
            reasons.append(f"predicted class agrees on {self.argmax_agreement:.2%} of samples "
                           f"(expected >= {self.min_argmax_agreement:.2%})")
        return reasons

    def summary(self) -> str:
        worst = ", ".join(f"{o.name} max|Δ| {o.max_abs_error:.2e}" for o in self.outputs)
        verdict = "PASS" if self.passed else "FAIL"
        head = f"{verdict} {self.candidate} vs {self.reference} on {self.samples} samples: {worst}"
        if self.task == "embedding":
            return (f"{head}; cosine min {self.min_cosine:.6f} mean {self.mean_cosine:.6f} (>= {self.cosine_threshold}); "
                    f"nearest-neighbour agreement {self.neighbour_agreement:.2%}")
        if self.task == "generic":
            return head
        return f"{head}; argmax agreement {self.argmax_agreement:.2%}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        for out, o in zip(data["outputs"], self.outputs):
            out["passed"] = o.passed
        return data


def compare(reference: Runner, candidate: Runner, batches: Iterable[Batch], output_names: Sequence[str],
            tolerance: Callable[[str], Tolerance], min_argmax_agreement: float,
            reference_name: str, candidate_name: str, task: str = "classification",
            pairs: Sequence[tuple[int, int]] = (), min_cosine: float = 0.9999,
            min_neighbour_agreement: float = 0.98) -> ParityReport:
    """Run both on every batch and accumulate per-output errors; the first output is the class scores
    (classification) or the embedding (embedding)."""
    report = ParityReport(reference_name, candidate_name, min_argmax_agreement=min_argmax_agreement, task=task)
    firsts: tuple[list, list] = ([], [])
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
        if task == "classification":
            agree += int((np.asarray(expected[0]).argmax(-1) == np.asarray(actual[0]).argmax(-1)).sum())
        if task == "embedding":
            firsts[0].append(np.asarray(expected[0]))
            firsts[1].append(np.asarray(actual[0]))
        report.samples += int(np.asarray(expected[0]).shape[0])
    report.outputs = list(per_output.values())
    report.argmax_agreement = agree / report.samples if report.samples and task == "classification" else 1.0
    if task == "embedding" and firsts[0]:
        embedding_agreement(report, np.concatenate(firsts[0]), np.concatenate(firsts[1]), pairs, min_cosine,
                            min_neighbour_agreement)
    return report


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity (shapes must agree; a non-finite row scores -1)."""
    from builders.metrics import unit_rows

    if reference.shape != candidate.shape:
        return np.full(len(reference), -1.0)
    values = (unit_rows(reference) * unit_rows(np.nan_to_num(candidate, nan=0.0, posinf=0.0, neginf=0.0))).sum(1)
    finite = np.isfinite(candidate.reshape(len(candidate), -1)).all(axis=1)
    return np.where(finite, values, -1.0)


def embedding_agreement(report: ParityReport, reference: np.ndarray, candidate: np.ndarray,
                        pairs: Sequence[tuple[int, int]], min_cosine: float, min_neighbour_agreement: float) -> None:
    """Fill the cosine and nearest-neighbour fields of ``report`` (rows are examples in held-out order)."""
    from builders.metrics import nearest

    pairs = [p for p in pairs if max(p) < len(reference)]  # a sample limit may cut the held-out rows short
    values = cosines(reference, candidate)
    report.min_cosine = round(float(values.min()), 7)
    report.mean_cosine = round(float(values.mean()), 7)
    report.cosine_threshold = min_cosine
    report.min_neighbour_agreement = min_neighbour_agreement
    if len(reference) < 2:
        report.neighbour_agreement = 1.0
        return
    same = nearest(reference, list(pairs)) == nearest(np.nan_to_num(candidate), list(pairs))
    report.neighbour_agreement = round(float(same.mean()), 6)
