"""The typed answer of one inference call: per-row labels and scores for classifiers, and every raw output.

How labels and scores are found, first match wins:

* the model returns them itself: a string output ``label`` and a float output ``score`` (the ``textclf_text``
  ensemble);
* it returns class probabilities (``probabilities``): the top class per row, its probability as the score, and its
  name from the model's labels (see :mod:`clients.model_info`), or the class index as a string (``digits``: "7");
* it returns only ``logits``: the same from their softmax.

A model with none of these (a regression, an embedding) has ``labels`` and ``scores`` set to None and its outputs in
``outputs``. An embedding model's vectors (a float output named ``embedding``, ``embeddings`` or
``sentence_embedding``, one row per input) are also in ``embeddings`` as float32 ``[rows, dims]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.model_info import ModelInfo

LABEL_OUTPUT, SCORE_OUTPUT = "label", "score"
PROBABILITY_OUTPUTS = ("probabilities", "probs")
LOGIT_OUTPUTS = ("logits",)
EMBEDDING_OUTPUTS = ("embedding", "embeddings", "sentence_embedding")


@dataclass
class InferenceResult:
    model: str
    version: str
    protocol: str
    outputs: dict[str, np.ndarray]
    labels: list[str] | None = None
    scores: np.ndarray | None = None  # float per row: the probability of ``labels[row]``
    class_index: np.ndarray | None = None  # int per row, when the model returns class scores
    embeddings: np.ndarray | None = None  # float32 [rows, dims], when the model returns an embedding
    latency_s: float = 0.0  # the whole call, as the caller waited for it
    attempts: int = 1  # inference requests sent (1 unless retried)
    retries: int = 0  # retries of the whole call, reading the model's metadata included
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, include_outputs: bool = True) -> dict[str, Any]:
        """JSON-ready form (used by ``python -m clients infer --json``)."""
        rows = []
        if self.labels is not None:
            for row, label in enumerate(self.labels):
                item: dict[str, Any] = {"label": label}
                if self.scores is not None:
                    item["score"] = float(self.scores[row])
                if self.class_index is not None:
                    item["class_index"] = int(self.class_index[row])
                rows.append(item)
        data: dict[str, Any] = {"model": self.model, "version": self.version, "protocol": self.protocol,
                                "latency_ms": round(self.latency_s * 1000.0, 3), "attempts": self.attempts,
                                "retries": self.retries,
                                "predictions": rows}
        if self.embeddings is not None:
            data["embeddings"] = {"rows": int(self.embeddings.shape[0]), "dims": int(self.embeddings.shape[1]),
                                  "norms": [round(float(n), 6) for n in np.linalg.norm(self.embeddings, axis=1)]}
        if include_outputs:
            data["outputs"] = {name: _json_array(value) for name, value in self.outputs.items()}
        return data


def _json_array(array: np.ndarray) -> Any:
    if array.dtype.kind in ("O", "S"):
        return np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


def interpret(info: ModelInfo, outputs: dict[str, np.ndarray], protocol: str) -> InferenceResult:
    """Derive labels and scores from raw outputs (see the module docstring)."""
    result = InferenceResult(model=info.name, version=info.version, protocol=protocol, outputs=outputs)
    probabilities = next((outputs[n] for n in PROBABILITY_OUTPUTS if n in outputs), None)
    if probabilities is None:
        logits = next((outputs[n] for n in LOGIT_OUTPUTS if n in outputs), None)
        if logits is not None and logits.dtype.kind == "f" and logits.ndim >= 1:
            probabilities = _softmax(logits.astype(np.float64))
    if probabilities is not None and probabilities.dtype.kind == "f" and probabilities.ndim >= 1:
        flat = probabilities.reshape(-1, probabilities.shape[-1]) if probabilities.ndim > 1 else probabilities[None, :]
        result.class_index = flat.argmax(axis=-1)
        result.scores = flat.max(axis=-1).astype(np.float32)
        names = info.labels
        result.labels = [names[i] if names and i < len(names) else str(int(i)) for i in result.class_index]
    embedding = next((outputs[n] for n in EMBEDDING_OUTPUTS if n in outputs), None)
    if embedding is not None and embedding.dtype.kind == "f" and embedding.ndim >= 1:
        result.embeddings = embedding.astype(np.float32, copy=False).reshape(len(embedding) if embedding.ndim > 1 else 1, -1)
    if LABEL_OUTPUT in outputs and outputs[LABEL_OUTPUT].dtype.kind in ("O", "S", "U"):
        result.labels = _decode(outputs[LABEL_OUTPUT])
        if SCORE_OUTPUT in outputs:
            result.scores = outputs[SCORE_OUTPUT].reshape(-1).astype(np.float32)
    return result
