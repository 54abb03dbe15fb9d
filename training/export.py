"""Write and read the training→builders hand-off (see :mod:`common.manifest` for the format).

The trainer calls :func:`export_weights` at the end of a run and whenever a new best checkpoint appears; the builders
call :func:`load_exported` to get the same ``nn.Module`` back, plus the spec, configs and manifest that describe it.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.environment import code_version
from common.errors import UserError
from common.weights import load_weights
from common.files import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file
from common.manifest import (TOKENIZER_NAME, WEIGHTS_NAME, CheckpointRef, FileRef, Manifest, read_manifest,
                             write_manifest)
from training import models
from training.models.base import ExportFiles, ModelSpec, Splits



def export_weights(
    run_dir: str | Path,
    spec: ModelSpec,
    arch: Any,
    data_cfg: Any,
    model: nn.Module,
    splits: Splits,
    metrics: dict[str, float],
    training_config: dict[str, Any],
    parent: CheckpointRef | None,
) -> Manifest:
    """Write ``model.safetensors`` (+ ``tokenizer.json``) and then ``manifest.json``, each atomically.

    Refuses non-finite weights: a NaN never reaches the builders.
    """
    from safetensors.torch import save as save_safetensors

    run_dir = Path(run_dir)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"refusing to export {run_dir / WEIGHTS_NAME}: weight {key!r} has non-finite values")
    files = spec.export_files(run_dir, arch, model, splits)
    if files is None:
        # One metadata entry only: safetensors keeps metadata in a hash map whose order changes from process to
        # process, and the same weights must give the same bytes (resume equivalence is checked byte for byte). The
        # model name and everything else about the weights is in manifest.json.
        blob = save_safetensors(state, metadata={"format": "pt"})
        atomic_write_bytes(run_dir / WEIGHTS_NAME, blob)
        tokenizer_ref = None
        if "tokenizer_json" in splits.artifacts:
            text = splits.artifacts["tokenizer_json"]
            atomic_write_text(run_dir / TOKENIZER_NAME, text)
            tokenizer_ref = FileRef(file=TOKENIZER_NAME, sha256=sha256_bytes(text.encode("utf-8")))
        files = ExportFiles(weights=FileRef(file=WEIGHTS_NAME, sha256=sha256_bytes(blob)), tokenizer=tokenizer_ref)
    manifest = Manifest(
        model=files.model or spec.name,
        factory=getattr(spec, "source_reference", None),  # a spec file outside the package names itself
        arch=files.arch if files.arch is not None else arch.model_dump(mode="json"),
        inputs=spec.inputs(arch),
        outputs=spec.outputs(arch),
        labels=splits.labels,
        weights=files.weights,
        tokenizer=files.tokenizer,
        preprocessing=spec.preprocessing(arch, splits),
        metrics={**{k: float(v) for k, v in metrics.items()}, **files.metrics},
        data_version=splits.version,
        code_version=code_version(),
        parent_checkpoint=parent,
        training={**training_config, "data": data_cfg.model_dump(mode="json"), **files.training},
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(run_dir, manifest)
    return manifest


@dataclass
class Exported:
    manifest: Manifest
    spec: ModelSpec
    arch: Any
    data: Any
    model: nn.Module  # eval mode, weights loaded
    run_dir: Path

    def load_splits(self) -> Splits:
        """The data splits the weights were trained and evaluated on (rebuilt deterministically)."""
        return self.spec.load_data(self.data, self.arch)


def load_exported(run_dir: str | Path) -> Exported:
    """Rebuild the exported model of a training run, verifying hashes and the architecture against the weights."""

    from common.config import validate

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, verify=True)
    if manifest.arch.get("source") == "hf":
        raise UserError(f"{run_dir / 'manifest.json'}: this run fine-tuned a Hugging Face model; its merged model is the "
                        f"folder {run_dir / str(manifest.arch.get('path'))} (load it with transformers' "
                        "AutoModelForSequenceClassification, or build it with `python -m builders build --run-dir`)")
    external = (manifest.training.get("config") or {}).get("spec")
    if external:  # trained from --spec FILE.py:CLASS: register that class again
        models.load_spec_file(external)
    spec = models.get(manifest.model)
    arch = validate(spec.Arch, manifest.arch, f"{run_dir / 'manifest.json'}: arch")
    data = validate(spec.Data, manifest.training.get("data", {}), f"{run_dir / 'manifest.json'}: training.data")
    model = spec.build(arch)
    weights = run_dir / manifest.weights.file
    load_weights(model, weights, f"the architecture in manifest.json (model {manifest.model!r})")
    model.eval()
    return Exported(manifest, spec, arch, data, model, run_dir)


__all__ = ["export_weights", "load_exported", "Exported", "code_version", "sha256_file"]
