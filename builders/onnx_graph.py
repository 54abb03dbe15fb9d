"""What an ONNX file promises to its callers: input/output names, datatypes and shapes (symbolic axes by name).

Read without loading weights, so the linter can compare a hand-written ``config.pbtxt`` against a large model cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from builders.dtypes import from_onnx_enum


@dataclass(frozen=True)
class GraphTensor:
    name: str
    dtype: str  # manifest-style: float32, int64, ...
    shape: tuple[int | str, ...]  # int for fixed axes, the symbol (or "?") for dynamic ones


@dataclass(frozen=True)
class GraphSignature:
    inputs: dict[str, GraphTensor]
    outputs: dict[str, GraphTensor]


def _tensor(value_info) -> GraphTensor:
    tensor_type = value_info.type.tensor_type
    shape: list[int | str] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or "?")
    return GraphTensor(value_info.name, from_onnx_enum(tensor_type.elem_type), tuple(shape))


def read_signature(path: str | Path) -> GraphSignature:
    """The graph inputs (minus initializers) and outputs of an ONNX file; a :class:`UserError` if it is not one."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected an ONNX model)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = {vi.name: _tensor(vi) for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: _tensor(vi) for vi in model.graph.output}
    return GraphSignature(inputs, outputs)
