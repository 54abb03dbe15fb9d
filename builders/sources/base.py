"""What the build pipeline needs to know about a model, whatever it came from.

A :class:`ModelSource` is the one interface the builders consume (export, parity, INT8, gate, configs, packaging):

* a :class:`Signature`: named inputs and outputs with symbolic dims and dtypes, the task
  (``classification`` | ``embedding`` | ``generic``), class labels, and preprocessing (tokenizer file, maximum
  length, pad ids);
* either a finished ONNX file (:meth:`ModelSource.onnx_file`; the export step is skipped) or an ``nn.Module`` with
  example inputs (:meth:`ModelSource.module`, :meth:`ModelSource.example_inputs`) that the builders export;
* held-out data (:class:`HeldOut`): labelled examples, text pairs, tensors, or inputs generated from the signature.

Adapters live in sibling modules, one per kind of source (a training run, a Hugging Face directory, an ONNX file with
a signature TOML, a Python factory with safetensors weights). None of them imports ``training/``: a training run
names the factory that rebuilds its network, and that factory is imported by its dotted name.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.errors import UserError
from common.manifest import TensorSpec

Task = Literal["classification", "embedding", "generic"]
TASKS: tuple[str, ...] = ("classification", "embedding", "generic")
SIGNATURE_FORMAT = """task = "classification"          # or "embedding", "generic"
labels = ["negative", "positive"]   # classification only: index i is class i
[[inputs]]
name = "input_ids"
dtype = "int64"
shape = ["batch", "sequence"]
[[outputs]]
name = "logits"
dtype = "float32"
shape = ["batch", 2]
[preprocessing]                     # text models: the raw-text ensemble tokenizes with this file
tokenizer_file = "tokenizer.json"   # relative to the signature file
max_length = 128
pad_id = 0"""


class Preprocessing(BaseModel):
    """How raw inputs become tensors: today only text (a Hugging Face ``tokenizers`` file)."""

    model_config = ConfigDict(extra="forbid")

    tokenizer_file: Path | None = Field(None, description="tokenizer.json of the model (relative to the signature file)")
    max_length: int | None = Field(None, ge=1, description="longest token sequence the model accepts (truncation)")
    pad_id: int = Field(0, description="token id used to right-pad input_ids")
    pad_values: dict[str, int] = Field(default_factory=dict,
                                       description="pad value per input when it is not pad_id (attention_mask: 0)")
    vocab_size: int | None = Field(None, ge=1, description="token ids the model accepts: [0, vocab_size)")

    def hints(self) -> dict[str, Any]:
        """The serving hints as the configuration generators read them (the manifest's ``preprocessing``)."""
        out: dict[str, Any] = {"pad_id": self.pad_id}
        if self.max_length is not None:
            out["max_length"] = self.max_length
        if self.pad_values:
            out["pad_values"] = dict(self.pad_values)
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        return out


class Signature(BaseModel):
    """The model's contract: what goes in, what comes out, what it means (also the schema of a signature TOML)."""

    model_config = ConfigDict(extra="forbid")

    task: Task = "generic"
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list, description="class names (classification)")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)

    @model_validator(mode="after")
    def _consistent(self):
        names = [t.name for t in self.inputs + self.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tensor names must be unique, {duplicates} appear more than once")
        for spec in self.inputs + self.outputs:
            if not spec.shape or spec.shape[0] != "batch":
                raise ValueError(f"tensor {spec.name!r}: shape {list(spec.shape)} must start with \"batch\"")
        if self.task == "classification":
            if not self.labels:
                raise ValueError("task classification needs labels (one name per class)")
            classes = self.outputs[0].shape[-1]
            if isinstance(classes, int) and classes != len(self.labels):
                raise ValueError(f"outputs[0] {self.outputs[0].name!r} has {classes} classes but labels has "
                                 f"{len(self.labels)}")
        if self.task == "embedding" and len(self.outputs[0].shape) != 2:
            raise ValueError(f"task embedding: outputs[0] {self.outputs[0].name!r} must be [batch, dim], "
                             f"got {list(self.outputs[0].shape)}")
        return self

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def read_signature(path: str | Path, task: str | None = None) -> Signature:
    """A signature TOML; relative ``preprocessing.tokenizer_file`` is resolved against the file's folder."""
    from common.config import read_mapping, validate

    path = Path(path)
    if not path.is_file():
        raise UserError(f"signature file {path} does not exist (expected a TOML file like:\n{SIGNATURE_FORMAT})")
    data = dict(read_mapping(path))
    if task is not None:
        data["task"] = task
    signature = validate(Signature, data, str(path))
    tok = signature.preprocessing.tokenizer_file
    if tok is not None and not tok.is_absolute():
        tok = path.parent / tok
        signature.preprocessing.tokenizer_file = tok
    if tok is not None and not tok.is_file():
        raise UserError(f"{path}: preprocessing.tokenizer_file names {tok}, which does not exist")
    return signature


@dataclass
class Batch:
    inputs: list[np.ndarray]
    targets: np.ndarray | None = None  # class indexes (classification with labels); None otherwise


@dataclass
class HeldOut:
    """Held-out examples the builders compare and score the model on.

    ``kind`` says what can be measured: ``labels`` (accuracy), ``pairs`` (embeddings: rows ``pairs[k] = (i, j)`` are
    related texts, for nearest-neighbour agreement and recall@1), ``texts``/``tensors`` (parity only), ``generated``
    (inputs made up from the signature: parity only, accuracy gating off).
    """

    make_batches: Callable[[int, int | None], Iterator[Batch]]
    size: int
    kind: Literal["labels", "pairs", "texts", "tensors", "generated"]
    origin: str
    identity: dict = field(default_factory=dict)  # what makes two held-out sets the same (data_version, tokenizer)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        return self.make_batches(batch_size, limit)

    @property
    def gating(self) -> bool:
        """Whether a quality metric (accuracy, recall@1) can be measured, so the gate can compare versions."""
        return self.kind in ("labels", "pairs")


def pad_stack(rows: Sequence[np.ndarray], pad: int | float) -> np.ndarray:
    """Stack per-example arrays along a new batch axis, right-padding every axis to the longest."""
    shape = tuple(max(sizes) for sizes in zip(*(r.shape for r in rows))) if rows[0].ndim else ()
    out = np.full((len(rows),) + shape, pad, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[(i,) + tuple(slice(0, s) for s in row.shape)] = row
    return out


def rows_heldout(rows: list[list[np.ndarray]], targets: list[int] | None, signature: Signature, kind: str, origin: str,
                 identity: dict, pairs=None, texts=None) -> HeldOut:
    """A :class:`HeldOut` over per-example arrays, batched with the signature's pad values."""
    pads = [signature.preprocessing.pad_values.get(t.name, signature.preprocessing.pad_id) for t in signature.inputs]

    def make(batch_size: int, limit: int | None) -> Iterator[Batch]:
        count = len(rows) if limit is None else min(limit, len(rows))
        for start in range(0, count, batch_size):
            chunk = rows[start:min(start + batch_size, count)]
            inputs = [pad_stack([r[k] for r in chunk], pads[k]) for k in range(len(pads))]
            yield Batch(inputs, None if targets is None else np.asarray(targets[start:start + len(chunk)]))

    return HeldOut(make, len(rows), kind, origin, identity, list(pairs or []), list(texts or []))


class ModelSource(ABC):
    """Base of the four adapters; a subclass sets the attributes and implements what its kind of model offers."""

    kind: str = "?"
    name: str
    signature: Signature
    origin: dict  # where it came from, recorded in the lineage (path, hashes of weights and tokenizer, ...)

    @property
    def task(self) -> str:
        return self.signature.task

    @property
    def labels(self) -> list[str]:
        return list(self.signature.labels)

    @property
    def tokenizer_file(self) -> Path | None:
        return self.signature.preprocessing.tokenizer_file

    def onnx_file(self) -> Path | None:
        """A finished ONNX file to build from (export skipped), or None when :meth:`module` is to be exported."""
        return None

    def module(self):
        """The ``nn.Module`` (eval mode): forward takes the inputs positionally, returns a tuple in output order."""
        raise UserError(f"{self.kind} source {self.name!r} has no PyTorch module")

    def example_inputs(self, batch_size: int) -> tuple:
        """Export example (torch tensors, batch >= 2, mixed lengths) made from the signature."""
        import torch

        return tuple(torch.from_numpy(a) for a in generated_inputs(self.signature, batch_size, seed=0, length=16))

    @abstractmethod
    def heldout(self) -> HeldOut:
        """Held-out batches for parity and the gate: the user's ``--heldout`` file, the run's test split, or inputs
        generated from the signature (``HeldOut.kind == "generated"``: accuracy gating is off)."""

    def calibration(self) -> HeldOut:
        """Data for INT8 calibration (TensorRT): the held-out set unless the source has a separate split."""
        return self.heldout()

    def reference_embeddings(self, texts: list[str]) -> np.ndarray | None:
        """An external reference for embeddings (sentence-transformers), when the source has one."""
        return None

    @property
    def manifest(self) -> "ServingView":
        """The manifest-shaped view (inputs, outputs, labels, preprocessing) older step code reads."""
        return self.serving_view()

    spec = None  # a training spec's collate is not needed: HeldOut batches itself

    def architecture(self) -> dict:
        """Architecture facts the serving configs check against (``vocab_size``: rows of the embedding table)."""
        return {}

    def serving_view(self) -> "ServingView":
        tok = self.tokenizer_file
        ref = TokenizerRef(str(Path(tok).resolve()), self.origin.get("tokenizer_sha256")) if tok else None
        return ServingView(self.name, list(self.signature.inputs), list(self.signature.outputs), self.labels,
                           self.signature.preprocessing.hints(), ref, self.architecture())


@dataclass(frozen=True)
class TokenizerRef:
    file: str  # absolute path (joining it to any folder gives itself)
    sha256: str | None


@dataclass(frozen=True)
class ServingView:
    """The part of a model the configuration generators and shape derivation read, shaped like a training manifest
    (``inputs``, ``outputs``, ``labels``, ``preprocessing``, ``tokenizer``, ``arch``)."""

    model: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    preprocessing: dict
    tokenizer: TokenizerRef | None = None
    arch: dict = field(default_factory=dict)


def generated_inputs(signature: Signature, batch: int, seed: int, length: int = 16) -> list[np.ndarray]:
    """Inputs made up from the signature: float inputs normal, ids in a small safe range, masks of mixed lengths.

    Symbolic non-batch axes get ``length`` (capped by ``max_length``); row k of a text batch is padded after
    ``length - k`` tokens so padding is exercised.
    """
    rng = np.random.default_rng(seed)
    max_length = signature.preprocessing.max_length or length
    size = min(length, max_length)
    valid = [max(1, size - (k % size)) for k in range(batch)]
    out = []
    for spec in signature.inputs:
        shape = [batch] + [d if isinstance(d, int) else size for d in spec.shape[1:]]
        if spec.dtype.startswith("float"):
            out.append(rng.standard_normal(shape).astype(spec.dtype))
            continue
        if spec.dtype == "bool":
            out.append(np.ones(shape, dtype=bool))
            continue
        if spec.name == "attention_mask" and len(shape) == 2:
            array = np.zeros(shape, dtype=spec.dtype)
            for k, n in enumerate(valid):
                array[k, :n] = 1
        elif spec.name == "token_type_ids":
            array = np.zeros(shape, dtype=spec.dtype)
        else:
            vocab = signature.preprocessing.vocab_size or 2000
            low, high = (min(1000, max(1, vocab // 4)), min(2000, vocab)) if spec.name == "input_ids" else (0, 2)
            array = rng.integers(low, high, size=shape).astype(spec.dtype)
            if spec.name == "input_ids" and len(shape) == 2:
                for k, n in enumerate(valid):
                    array[k, n:] = signature.preprocessing.pad_id
        out.append(array)
    return out


def generated_heldout(signature: Signature, samples: int = 64, seed: int = 1) -> HeldOut:
    """Held-out inputs generated from the signature (no data given): parity only, accuracy gating off."""
    arrays = generated_inputs(signature, samples, seed)
    rows = [[a[i] for a in arrays] for i in range(samples)]
    # per-row trimming keeps mixed lengths when re-batched: a row's padded tail is cut where its mask ends
    if "attention_mask" in signature.input_names:
        mask_at = signature.input_names.index("attention_mask")
        dynamic = [k for k, t in enumerate(signature.inputs) if len(t.shape) == 2 and isinstance(t.shape[1], str)]
        for row in rows:
            n = int(row[mask_at].sum())
            for k in dynamic:
                row[k] = row[k][:n]
    return rows_heldout(rows, None, signature, "generated", "generated from the signature (no --heldout given)",
                        {"split": "generated", "samples": samples, "data_version": "generated-v1"})


def _module_from_file(path: Path):
    """Import a Python file by its path (once per path), as the factory of a model defined outside any package."""
    import hashlib
    import importlib.util
    import sys

    path = path.expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected a Python file)")
    name = "_model_factory_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name not in sys.modules:
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def import_object(spec: str, what: str):
    """``package.module:attribute`` or ``path/to/file.py:attribute`` → the attribute; a :class:`UserError` saying
    which part does not import."""
    module_name, sep, attribute = spec.rpartition(":") if spec.partition(":")[0].endswith(".py") else spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"{what} {spec!r} is not of the form package.module:function or path/to/file.py:function")
    try:
        module = _module_from_file(Path(module_name)) if module_name.endswith(".py") else \
            importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as exc:  # ImportError, or the module's own import-time failure
        raise UserError(f"{what} {spec!r}: module {module_name!r} does not import ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserError(f"{what} {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{what} {spec!r}: {attribute!r} is not callable")
    return target
