"""PyTorch → ONNX with the manifest's names, dynamic batch/sequence axes, a pinned opset, checked and simplified.

Why each step is here:

* names come from the model's signature (``image``/``input_ids`` → ``logits``/``probabilities``/``embedding``), never
  the exporter's ``input.1``: configs and clients are written against those names. Outputs are exported under
  temporary names and renamed afterwards, because the exporter also names intermediate values after operators
  (an ``aten::embedding`` result is called ``embedding``), which would collide with an output of that name;
* the tracing example has batch ≥ 2 and every symbolic axis is declared with ``torch.export.Dim``: an example with
  batch 1 silently fixes the batch at 1 and Triton later fails with "expected dimension 0 between 1 and 1";
* the IR version is capped (``export.max_ir_version``) because the installed ONNX Runtime refuses newer files;
* ``onnx.checker`` (full check, with shape inference) runs on every file we write; onnxslim's simplified graph is kept
  only when it still passes the checker and parity (the caller decides, see :mod:`builders.pipeline`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.files import atomic_write_bytes, sha256_file
from builders.settings import ExportConfig


@dataclass
class OnnxFile:
    path: Path
    opset: int
    ir_version: int
    simplified: bool
    nodes: int
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict:
        return {"file": self.path.name, "opset": self.opset, "ir_version": self.ir_version, "simplified": self.simplified,
                "nodes": self.nodes, "sha256": self.sha256, "size_bytes": self.size_bytes}


def _dynamic_shapes(source, config: ExportConfig):
    """One ``torch.export.Dim`` per symbolic axis name, shared by every input that uses it."""
    import torch

    limits = {"batch": config.max_batch_dim}
    max_length = source.signature.preprocessing.max_length
    dims: dict[str, object] = {}
    shapes = []
    for spec in source.signature.inputs:
        axes = {}
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                if dim not in dims:
                    upper = limits.get(dim, max_length)
                    dims[dim] = torch.export.Dim(dim, min=1, max=int(upper)) if upper else torch.export.Dim(dim, min=1)
                axes[axis] = dims[dim]
        shapes.append(axes)
    return tuple(shapes)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _exporter_reason(exc: BaseException) -> str:
    """The informative part of an exporter failure: the operator without an ONNX translation when there is one."""
    texts, seen = [], exc
    while seen is not None and len(texts) < 6:
        texts.append(_ANSI.sub("", str(seen)))
        seen = seen.__cause__ or seen.__context__
    full = "\n".join(texts)
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", full)
    if missing:
        return (f"operator {missing.group(1)} has no ONNX translation (express it with supported operators, or "
                "register an onnxscript function for it)")
    for line in full.splitlines():
        if line.startswith("<class '") and "'>: " in line:
            return line.split("'>: ", 1)[1].strip()
    for line in full.splitlines():
        if "nsupported" in line or "not supported" in line:
            return line.strip()
    lines = [line.strip() for line in full.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def fix_ir_version(model, max_ir_version: int) -> None:
    """Lower the IR version to what ONNX Runtime accepts, but never below what the opsets need."""
    import onnx

    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if model.ir_version > max_ir_version:
        if needed > max_ir_version:
            raise UserError(f"export.max_ir_version {max_ir_version} is below IR {needed}, which opset "
                            f"{[o.version for o in model.opset_import]} requires; raise it or lower export.opset")
        model.ir_version = max(needed, max_ir_version)


def check(model, source: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise UserError(f"{source}: onnx.checker rejected the graph: {str(exc).splitlines()[0]}") from None


_TEMP_OUTPUT = "__builders_output_{}"


def _rename_outputs(model, names: list[str]) -> None:
    """Give the graph outputs (exported as ``__builders_output_k``) their real names; an intermediate value that
    already has one of those names is renamed out of the way first."""
    graph = model.graph
    temp = {_TEMP_OUTPUT.format(k): name for k, name in enumerate(names)}
    if [o.name for o in graph.output] != list(temp):
        return  # the exporter did not keep the temporary names; _check_names reports what it wrote
    clash = {name: f"{name}__intermediate" for name in names}
    mapping = {**clash, **temp}

    def rename(value: str) -> str:
        return mapping.get(value, value)

    for node in graph.node:
        node.input[:] = [rename(v) for v in node.input]
        node.output[:] = [rename(v) for v in node.output]
    for vi in list(graph.value_info) + list(graph.output):
        vi.name = rename(vi.name)
    for init in graph.initializer:
        init.name = rename(init.name)


def _check_names(model, source, where: str) -> None:
    initializers = {i.name for i in model.graph.initializer}
    got_in = [vi.name for vi in model.graph.input if vi.name not in initializers]
    got_out = [vi.name for vi in model.graph.output]
    want_in = source.signature.input_names
    want_out = source.signature.output_names
    if got_in != want_in or got_out != want_out:
        raise UserError(f"{where}: exported graph has inputs {got_in} and outputs {got_out}, but the model's "
                        f"signature declares inputs {want_in} and outputs {want_out} (the model's forward must "
                        "take and return them in that order)")


def _save(model, path: Path, simplified: bool) -> OnnxFile:
    atomic_write_bytes(path, model.SerializeToString())
    return OnnxFile(path, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), model.ir_version,
                    simplified, len(model.graph.node), sha256_file(path), path.stat().st_size)


def export(source, path: str | Path, config: ExportConfig) -> OnnxFile:
    """Export the source's module to ``path`` (weights embedded), named, dynamic, checked."""
    import onnx
    import torch

    path = Path(path)
    signature = source.signature
    module = source.module()
    example = source.example_inputs(config.example_batch)
    tmp = path.with_name(f".{path.name}.export")
    captured = io.StringIO()
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, tuple(example), str(tmp), dynamo=True, external_data=False,
                opset_version=config.opset, input_names=signature.input_names,
                output_names=[_TEMP_OUTPUT.format(k) for k in range(len(signature.outputs))],
                dynamic_shapes=_dynamic_shapes(source, config), optimize=True, verify=False, report=False,
            )
        model = onnx.load(str(tmp))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot export model {source.name!r} ({source.kind} {source.origin.get('path')}) to ONNX "
                        f"opset {config.opset}: {_exporter_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _rename_outputs(model, signature.output_names)
    _check_names(model, source, str(path))
    fix_ir_version(model, config.max_ir_version)
    model.producer_name = "inference-platform builders"
    onnx.helper.set_model_props(model, {"model": source.name, "source": source.kind,
                                        "weights_sha256": str(source.origin.get("weights_sha256")),
                                        "data_version": str(source.origin.get("data_version", ""))})
    check(model, str(path))
    return _save(model, path, simplified=False)


def adopt(source, path: str | Path, config: ExportConfig) -> OnnxFile:
    """An ONNX source's file, copied to ``path`` as the builders write their own: IR capped, checked, weights
    embedded (the file was already compared with its signature when the source was opened)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(source.onnx_file()), load_external_data=True)
    fix_ir_version(model, config.max_ir_version)
    check(model, str(source.onnx_file()))
    return _save(model, path, simplified=False)


def simplify(source: OnnxFile, path: str | Path, max_ir_version: int) -> OnnxFile:
    """onnxslim's simplified copy of ``source`` written to ``path`` (checked); the caller keeps it only if parity holds."""
    import onnx
    import onnxslim

    path = Path(path)
    model = onnx.load(str(source.path))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(model)
    except Exception as exc:
        raise UserError(f"onnxslim could not simplify {source.path}: {_exporter_reason(exc)}") from None
    fix_ir_version(slim, max_ir_version)
    check(slim, str(path))
    return _save(slim, path, simplified=True)
