"""Where a model comes from: one adapter per kind of source, all behind :class:`base.ModelSource`.

=====================  ===========================================================================================
``--run-dir DIR``      a training run (:mod:`.training_run`; a fine-tuning run's Hugging Face folder goes to ``hf``)
``--hf-dir DIR``       a Hugging Face model folder, sentence-transformers layout honoured (:mod:`.huggingface`)
``--onnx F --signature S``                    an ONNX file exported elsewhere; export skipped (:mod:`.onnx_file`)
``--factory M:F --weights W --signature S``   any ``nn.Module`` from a Python factory (:mod:`.factory`)
=====================  ===========================================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from builders.sources.base import HeldOut, ModelSource, Signature, ServingView

__all__ = ["SourceSpec", "open_source", "HeldOut", "ModelSource", "Signature", "ServingView"]


@dataclass
class SourceSpec:
    """The command-line description of a source (exactly one of run_dir, hf_dir, onnx, factory)."""

    run_dir: Path | None = None
    hf_dir: Path | None = None
    onnx: Path | None = None
    factory: str | None = None
    weights: Path | None = None
    signature: Path | None = None
    task: str | None = None
    heldout: Path | None = None

    def kind(self) -> str:
        given = [k for k in ("run_dir", "hf_dir", "onnx", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise UserError("give exactly one model source: --run-dir, --hf-dir, --onnx (with --signature) or "
                            f"--factory (with --weights and --signature); got {len(given)}: "
                            + (", ".join("--" + g.replace("_", "-") for g in given) or "none"))
        return given[0]

    def args(self) -> list[str]:
        """The command-line flags that name this source again (absolute paths), for reproduce scripts."""
        out: list[str] = []
        for key in ("run_dir", "hf_dir", "onnx", "factory", "weights", "signature", "task", "heldout"):
            value = getattr(self, key)
            if value is not None:
                out += ["--" + key.replace("_", "-"), str(Path(value).resolve()) if isinstance(value, Path) else value]
        return out


def open_source(spec: SourceSpec, name: str | None = None) -> ModelSource:
    """Open (and validate) the model source the flags describe; bad input is a one-line :class:`UserError`."""
    kind = spec.kind()
    if kind == "run_dir":
        from builders.sources.training_run import open_run

        return open_run(spec.run_dir, name, spec.heldout, spec.task)
    if kind == "hf_dir":
        from builders.sources.huggingface import HuggingFaceSource

        return HuggingFaceSource(spec.hf_dir, spec.task or "embedding", name, spec.heldout)
    if spec.signature is None:
        raise UserError(f"--{kind.replace('_', '-')} needs --signature FILE.toml (inputs, outputs, task, labels)")
    if kind == "onnx":
        from builders.sources.onnx_file import OnnxFileSource

        return OnnxFileSource(spec.onnx, spec.signature, spec.task, name, spec.heldout)
    from builders.sources.factory import FactorySource

    if spec.weights is None:
        raise UserError("--factory needs --weights FILE.safetensors (the module's state dict)")
    return FactorySource(spec.factory, spec.weights, spec.signature, spec.task, name, spec.heldout)
