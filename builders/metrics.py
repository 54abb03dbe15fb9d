"""The quality a task is judged by, measured one way for the candidate, its INT8 variant and the serving version.

=================  ========================================================================================
classification     accuracy: argmax of the first output against the held-out labels
embedding          recall@1 on held-out pairs: each pair's first text retrieves its partner among all partners
                   (cosine); without pairs, no quality number (parity by cosine still gates)
generic            no quality number: parity by per-output atol/rtol is the gate
=================  ========================================================================================

Without labelled data (no ``--heldout``, or texts/tensors only) the value is ``None`` and the report says that
accuracy gating is off.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from common.errors import UserError
from builders.runners import Runner


@dataclass
class Quality:
    name: str | None  # "accuracy" / "recall_at_1" / None when nothing can be measured
    value: float | None
    samples: int
    note: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def gating(self) -> bool:
        return self.value is not None


def metric_name(task: str, heldout) -> str | None:
    if task == "classification" and heldout.kind == "labels":
        return "accuracy"
    if task == "embedding" and heldout.kind == "pairs":
        return "recall_at_1"
    return None


def first_outputs(runner: Runner, heldout, batch_size: int, limit: int | None = None) -> np.ndarray:
    """The first output of every held-out example, in order (one row per example)."""
    parts = [np.asarray(runner(batch.inputs)[0]) for batch in heldout.batches(batch_size, limit)]
    if not parts:
        raise UserError(f"the held-out data ({heldout.origin}) is empty")
    return np.concatenate(parts, axis=0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(embeddings: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Per query, the index of its nearest candidate by cosine.

    With pairs: queries are the pairs' first rows, candidates their second rows. Without: every row against every
    other row.
    """
    e = unit_rows(embeddings)
    if pairs:
        queries = np.array([i for i, _ in pairs])
        candidates = np.array([j for _, j in pairs])
        return candidates[(e[queries] @ e[candidates].T).argmax(axis=1)]
    scores = e @ e.T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(axis=1)


def recall_at_1(embeddings: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    found = nearest(embeddings, pairs)
    return float(np.mean(found == np.array([j for _, j in pairs])))


def quality(task: str, runner: Runner, heldout, batch_size: int) -> Quality:
    """The task's quality number on the held-out data (``None`` with the reason when it cannot be measured)."""
    name = metric_name(task, heldout)
    if name is None:
        why = ("no labelled held-out data" if task == "classification" else
               "no held-out pairs" if task == "embedding" else "generic models have no quality metric")
        return Quality(None, None, heldout.size, f"accuracy gating is off: {why} ({heldout.origin}); parity gates "
                                                 "alone (give --heldout with labels or pairs to gate on quality)")
    if name == "accuracy":
        correct = total = 0
        for batch in heldout.batches(batch_size):
            scores = runner(batch.inputs)[0]
            correct += int((np.asarray(scores).argmax(axis=-1) == batch.targets).sum())
            total += len(batch.targets)
        if not total:
            raise UserError(f"the held-out data ({heldout.origin}) is empty: cannot measure accuracy")
        return Quality(name, correct / total, total, f"held-out accuracy on {heldout.origin}")
    embeddings = first_outputs(runner, heldout, batch_size)
    return Quality(name, recall_at_1(embeddings, heldout.pairs), len(heldout.pairs),
                   f"recall@1 over {len(heldout.pairs)} held-out pairs ({heldout.origin})")
