"""The hand-off from training to the builders: ``manifest.json`` + ``model.safetensors`` (+ ``tokenizer.json``).

A training run directory that the builders may consume looks like::

    RUN_DIR/
      manifest.json        # this schema (format_version 1), written last and atomically
      model.safetensors    # the weights, state_dict keys of the registered model class
      tokenizer.json       # only for text models: a Hugging Face `tokenizers` file the server loads as-is
      checkpoints/         # the trainer's own resumable checkpoints (not read by the builders)

``manifest.json`` records what the weights are (model name + architecture config, so the registered model class can
be rebuilt), how to feed them (named inputs/outputs with symbolic dims), what the outputs mean (labels), how good they
are (metrics on the held-out split), and where they came from (data/code version, parent checkpoint). Every file it
names carries a SHA-256, so a builder can tell a finished export from one interrupted half-way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.errors import UserError
from common.files import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"

#: the spec factory of runs written by this repository's trainer (``training.models.get(name)``); the builders import
#: it by this name, never ``training`` directly, so any trainer can name its own
DEFAULT_FACTORY = "training.models:get"

Dim = int | str  # a fixed size, or a symbolic name ("batch", "sequence") for a dynamic axis


class TensorSpec(BaseModel):
    """A named model input or output. ``shape`` includes the batch dimension as its first entry."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dtype: Literal["float32", "float16", "int64", "int32", "bool", "string"]
    shape: tuple[Dim, ...]


class FileRef(BaseModel):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class CheckpointRef(BaseModel):
    path: str
    sha256: str
    epoch: int
    step: int


class Manifest(BaseModel):
    """Schema of ``manifest.json`` (format_version 1)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[1] = 1
    model: str = Field(description="registered model name, e.g. 'digits' or 'textclf'")
    factory: str | None = Field(None, description="``package.module:function`` that, called with ``model``, returns "
                                                  "the spec that rebuilds the network (default: DEFAULT_FACTORY), or "
                                                  "``/abs/path/file.py:SpecClass`` for a spec defined outside any "
                                                  "package (the class is the spec)")
    arch: dict = Field(description="architecture config accepted by the model's registered ArchConfig, or for a "
                                   "run that wrote a Hugging Face folder {'source': 'hf', 'path': ..., 'task': ...}")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(description="class names, index i is output class i")
    weights: FileRef
    tokenizer: FileRef | None = None
    preprocessing: dict = Field(default_factory=dict, description="model-specific serving hints (pad id, max length)")
    metrics: dict[str, float] = Field(description="held-out metrics of these weights, e.g. val_accuracy")
    data_version: str
    code_version: str
    parent_checkpoint: CheckpointRef | None = None
    training: dict = Field(default_factory=dict, description="the run's resolved configuration, seed, epochs")
    created_at: str


def write_manifest(run_dir: str | Path, manifest: Manifest) -> Path:
    """Atomically write ``manifest.json`` into ``run_dir`` (call after the files it names are in place)."""
    path = Path(run_dir) / MANIFEST_NAME
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(run_dir: str | Path, verify: bool = True) -> Manifest:
    """Read and validate a run directory's manifest; with ``verify`` also check every referenced file's SHA-256.

    Raises :class:`UserError` naming the file and the field that is wrong.
    """
    from common.config import format_validation_error
    from pydantic import ValidationError

    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_NAME
    if not run_dir.is_dir():
        raise UserError(f"training run directory {run_dir} does not exist (expected the --run-dir of `python -m training`)")
    if not path.is_file():
        raise UserError(f"{path} is missing: the training run has not exported weights yet (run `python -m training` to the end)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); the manifest is corrupt, re-run training to re-export") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path))) from None
    if verify:
        refs = [("weights", manifest.weights)] + ([("tokenizer", manifest.tokenizer)] if manifest.tokenizer else [])
        for field, ref in refs:
            file = run_dir / ref.file
            if not file.is_file():
                raise UserError(f"{path}: {field}.file names {file}, which does not exist")
            actual = sha256_file(file)
            if actual != ref.sha256:
                raise UserError(
                    f"{path}: {field}.sha256 is {ref.sha256[:12]}… but {file} hashes to {actual[:12]}… "
                    "(the export was interrupted or the file was changed; re-run training to re-export)"
                )
    return manifest
