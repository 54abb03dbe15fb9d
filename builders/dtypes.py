"""One table for tensor datatypes, so the manifest, ONNX, numpy and Triton names never drift apart."""
from __future__ import annotations

from common.errors import UserError

# manifest dtype -> (Triton config type, ONNX TensorProto enum name, numpy dtype name)
_TABLE = {
    "float32": ("TYPE_FP32", "FLOAT", "float32"),
    "float16": ("TYPE_FP16", "FLOAT16", "float16"),
    "int64": ("TYPE_INT64", "INT64", "int64"),
    "int32": ("TYPE_INT32", "INT32", "int32"),
    "bool": ("TYPE_BOOL", "BOOL", "bool"),
    "string": ("TYPE_STRING", "STRING", "object"),
}


def triton_type(dtype: str) -> str:
    try:
        return _TABLE[dtype][0]
    except KeyError:
        raise UserError(f"datatype {dtype!r} has no Triton equivalent (expected one of {', '.join(_TABLE)})") from None


def from_onnx_enum(elem_type: int) -> str:
    """Manifest-style dtype name of an ONNX ``TensorProto`` element type."""
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type)
    for dtype, (_triton, onnx_name, _np) in _TABLE.items():
        if onnx_name == name:
            return dtype
    return name.lower()


def from_triton(type_name: str) -> str:
    for dtype, (triton, _onnx, _np) in _TABLE.items():
        if triton == type_name:
            return dtype
    return type_name
