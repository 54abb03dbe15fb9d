"""What a trainable, exportable model is to the platform: one :class:`ModelSpec` subclass per file in this package.

A spec bundles everything the trainer and the builders need to agree on without sharing code paths:

* ``Arch`` / ``Data``: pydantic models of the architecture and the data set (their values go into the manifest, so the
  builders can rebuild the same network and the same held-out split);
* ``inputs`` / ``outputs``: the named tensors of the exported graph, with symbolic dims (``"batch"``, ``"sequence"``);
* ``build``: the ``nn.Module``; its ``forward`` takes the inputs positionally in ``inputs`` order and returns a tuple in
  ``outputs`` order (what ``torch.onnx.export`` and Triton see), with class logits first;
* ``load_data``: deterministic train/val/test splits; ``collate`` turns a list of samples into ``(inputs, targets)``.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.data import Dataset

from common.manifest import FileRef, TensorSpec


class StrictConfig(BaseModel):
    """Base for configuration models: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    labels: list[str]
    version: str  # content hash of the data, recorded in the manifest as data_version
    artifacts: dict[str, Any]  # data-derived things the model needs at serving time (e.g. a tokenizer)


@dataclass(frozen=True)
class ExportFiles:
    """What a spec with its own export format wrote into the run directory (see :meth:`ModelSpec.export_files`).

    ``weights`` and ``tokenizer`` are recorded in the manifest with their SHA-256; ``model`` and ``arch`` replace the
    spec's name and architecture config there; ``metrics`` and ``training`` are merged into the manifest's fields.
    """

    weights: FileRef
    tokenizer: FileRef | None = None
    model: str | None = None
    arch: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def record_label(record: dict[str, Any], index: int, labels: list[str]) -> int:
    """The class index of a JSON record's ``label`` (a class name or index), or a ``ValueError`` naming the record."""
    label = record.get("label")
    if isinstance(label, str) and label in labels:
        return labels.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
        return label
    raise ValueError(f"record {index}: label {label!r} is not one of {labels} (or an index 0..{len(labels) - 1})")


def hash_strings(parts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


class ModelSpec(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Arch: ClassVar[type[StrictConfig]]
    Data: ClassVar[type[StrictConfig]]

    @abstractmethod
    def inputs(self, arch: Any) -> list[TensorSpec]: ...

    @abstractmethod
    def outputs(self, arch: Any) -> list[TensorSpec]: ...

    @abstractmethod
    def build(self, arch: Any) -> nn.Module: ...

    @abstractmethod
    def load_data(self, data: Any, arch: Any) -> Splits: ...

    @abstractmethod
    def collate(self, samples: list[Any]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Batch samples into (model inputs in ``inputs`` order, integer class targets)."""

    @abstractmethod
    def example_inputs(self, arch: Any, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs with a realistic shape for export and warm-up (batch ≥ 2 so the batch axis stays dynamic)."""

    def preprocessing(self, arch: Any, splits: Splits) -> dict[str, Any]:
        """Serving hints stored in the manifest (e.g. pad id, maximum sequence length)."""
        return {}

    def checkpoint_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold to restore ``module``: all of them unless most weights are frozen
        (a LoRA fine-tune keeps only its adapters and head; the rest is rebuilt from the base model)."""
        return module.state_dict()

    def load_checkpoint_state(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put :meth:`checkpoint_state`'s tensors back into a freshly built ``module``."""
        module.load_state_dict(state)

    def export_files(self, run_dir: Any, arch: Any, module: nn.Module, splits: Splits) -> ExportFiles | None:
        """Write this model's hand-off files into ``run_dir`` itself, or ``None`` for the default
        (``model.safetensors`` of the state dict, plus ``tokenizer.json`` when the data has one)."""
        return None

    def decode_records(self, records: list[dict[str, Any]], splits: Splits, arch: Any) -> Dataset:
        """Labelled samples from JSON records (new data for the training sidecar), shaped like ``splits.train``.

        Raise ``ValueError("record N: what is wrong (expected ...)")`` for the first malformed record. Models that
        cannot learn from new records keep this default.
        """
        raise ValueError(f"model {self.name!r} does not accept new training records")
