"""What a served model accepts and returns, read from the server, in one form for both protocols.

HTTP hands out model metadata and configuration as JSON, gRPC as protobuf messages (whose JSON form even spells int64
as strings). Both are parsed into Triton's own protobuf types (``service_pb2.ModelMetadataResponse``,
``model_config_pb2.ModelConfig``) and then into the small frozen :class:`ModelInfo` the client validates inputs
against, so validation cannot differ between protocols.

Labels (index i is the name of class i) come from the model configuration's ``parameters``: ``labels`` holding a
JSON list (``["billing", "delivery", ...]``) or a comma-separated string. Models that return their labels as a
string output (the ``textclf_text`` ensemble's ``label``) need none.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

LABELS_PARAMETER = "labels"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output. ``shape`` is the full request shape: batch dimension first when the model batches."""

    name: str
    datatype: str  # Triton wire name: FP32, INT64, BYTES...
    shape: tuple[int, ...]  # -1 for a dimension of any size
    optional: bool = False

    @property
    def numpy_dtype(self) -> np.dtype:
        from tritonclient.utils import triton_to_np_dtype

        return np.dtype(triton_to_np_dtype(self.datatype))

    @property
    def is_bytes(self) -> bool:
        return self.datatype == "BYTES"

    def describe(self, max_batch_size: int = 0) -> str:
        dims = [str(d) if d >= 0 else "any" for d in self.shape]
        if max_batch_size > 0 and dims:
            dims[0] = f"batch<={max_batch_size}"
        return f"{self.name} {self.datatype} [{', '.join(dims)}]"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str  # the version asked for, or "" for the server's choice (latest)
    versions: tuple[str, ...]
    platform: str
    max_batch_size: int  # 0: the model does not batch, shapes are taken as they are
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    labels: tuple[str, ...] | None
    dynamic_batching: bool

    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorInfo | None:
        return next((t for t in self.outputs if t.name == name), None)

    def describe_inputs(self) -> str:
        return ", ".join(t.describe(self.max_batch_size) for t in self.inputs)

    def describe_outputs(self) -> str:
        return ", ".join(t.describe(self.max_batch_size) for t in self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "versions": list(self.versions), "platform": self.platform,
            "max_batch_size": self.max_batch_size,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in self.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in self.outputs],
            "labels": list(self.labels) if self.labels else None,
        }


def metadata_from_json(data: dict[str, Any]):
    return json_format.ParseDict(data, service_pb2.ModelMetadataResponse(), ignore_unknown_fields=True)


def config_from_json(data: dict[str, Any]):
    data = data.get("config", data) if isinstance(data.get("config"), dict) else data
    return json_format.ParseDict(data, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)


def parse_labels(config) -> tuple[str, ...] | None:
    """Class names from the configuration's ``labels`` parameter (JSON list or comma-separated), if any."""
    if LABELS_PARAMETER not in config.parameters:
        return None
    text = config.parameters[LABELS_PARAMETER].string_value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            return None
        return tuple(str(v) for v in values) if isinstance(values, list) else None
    return tuple(part.strip() for part in text.split(","))


def build_model_info(metadata, config, version: str = "") -> ModelInfo:
    """Combine a ``ModelMetadataResponse`` and a ``ModelConfig`` (protobuf, from either protocol)."""
    optional = {i.name for i in config.input if i.optional}

    def tensors(items, optional_names=frozenset()):
        return tuple(TensorInfo(t.name, t.datatype, tuple(int(d) for d in t.shape), t.name in optional_names)
                     for t in items)

    return ModelInfo(
        name=metadata.name,
        version=version,
        versions=tuple(metadata.versions),
        platform=metadata.platform or config.backend or config.platform,
        max_batch_size=int(config.max_batch_size),
        inputs=tensors(metadata.inputs, optional),
        outputs=tensors(metadata.outputs),
        labels=parse_labels(config),
        dynamic_batching=config.HasField("dynamic_batching"),
    )
