"""An ONNX file exported elsewhere, plus a signature TOML naming its inputs, outputs, task and labels.

The export step is skipped: the file is checked (``onnx.checker``), its graph inputs and outputs are compared with the
signature (names, order, dtypes, ranks, fixed sizes), and the builders take it from there (simplification, parity of
the simplified graph against the original on ONNX Runtime, INT8, configs, gate). A file that disagrees with its
signature stops the build with one line naming both files and the tensor.
"""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from common.files import sha256_file
from builders.sources.base import HeldOut, ModelSource, generated_heldout, read_signature


def _graph_tensors(model):
    from builders.dtypes import from_onnx_enum

    initializers = {i.name for i in model.graph.initializer}

    def describe(values):
        out = []
        for vi in values:
            if vi.name in initializers:
                continue
            tensor = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
            out.append((vi.name, from_onnx_enum(tensor.elem_type), dims))
        return out

    return describe(model.graph.input), describe(model.graph.output)


def check_against_signature(model, signature, onnx_path: Path, signature_path: Path) -> None:
    """Raise a :class:`UserError` for the first tensor whose name, dtype, rank or fixed size disagree."""
    inputs, outputs = _graph_tensors(model)
    for role, declared, actual in (("inputs", signature.inputs, inputs), ("outputs", signature.outputs, outputs)):
        got_names = [name for name, _dtype, _dims in actual]
        want_names = [t.name for t in declared]
        if got_names != want_names:
            raise UserError(f"{onnx_path}: graph {role} are {got_names} but {signature_path} declares {role} "
                            f"{want_names} (expected the same names in the same order)")
        for spec, (name, dtype, dims) in zip(declared, actual):
            if dtype != spec.dtype:
                raise UserError(f"{onnx_path}: {role[:-1]} {name!r} is {dtype} but {signature_path} declares "
                                f"dtype {spec.dtype!r}")
            if len(dims) != len(spec.shape):
                raise UserError(f"{onnx_path}: {role[:-1]} {name!r} has rank {len(dims)} {dims} but "
                                f"{signature_path} declares shape {list(spec.shape)}")
            for axis, (got, want) in enumerate(zip(dims, spec.shape)):
                if isinstance(want, int) and isinstance(got, int) and got and got != want:
                    raise UserError(f"{onnx_path}: {role[:-1]} {name!r} axis {axis} is {got} but {signature_path} "
                                    f"declares {want}")
                if isinstance(want, str) and isinstance(got, int) and got:
                    raise UserError(f"{onnx_path}: {role[:-1]} {name!r} axis {axis} is fixed at {got} but "
                                    f"{signature_path} declares it dynamic ({want!r}); re-export with that axis "
                                    "dynamic")


class OnnxFileSource(ModelSource):
    kind = "onnx"

    def __init__(self, path: str | Path, signature_path: str | Path, task: str | None = None, name: str | None = None,
                 heldout: str | Path | None = None):
        import onnx

        self.path = path = Path(path)
        signature_path = Path(signature_path)
        if not path.is_file():
            raise UserError(f"--onnx {path} does not exist (expected an .onnx file)")
        self.signature = read_signature(signature_path, task)
        try:
            model = onnx.load(str(path), load_external_data=True)
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:
            raise UserError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0]})") from None
        check_against_signature(model, self.signature, path, signature_path)
        self.name = name or path.stem
        self._heldout_path = heldout
        tok = self.signature.preprocessing.tokenizer_file
        self.origin = {"kind": self.kind, "path": str(path.resolve()), "weights_sha256": sha256_file(path),
                       "signature": str(signature_path.resolve()), "signature_sha256": sha256_file(signature_path),
                       "tokenizer_sha256": sha256_file(tok) if tok else None}

    def onnx_file(self) -> Path:
        return self.path

    def heldout(self) -> HeldOut:
        if self._heldout_path is not None:
            from builders.sources.heldout import read_heldout

            return read_heldout(self._heldout_path, self.signature)
        return generated_heldout(self.signature)
