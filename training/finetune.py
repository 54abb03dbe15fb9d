"""The hand-off of a fine-tuned encoder: a plain Hugging Face directory with the adapters merged in.

Written on every new best and at the end of a run (the trainer calls :func:`export_hf` through the spec)::

    RUN_DIR/hf/        save_pretrained of AutoModelForSequenceClassification (config.json with id2label/label2id,
                       model.safetensors) + the base model's tokenizer files: what the builders publish
    RUN_DIR/adapter/   LoRA runs only: the adapters and the head alone (peft's adapter_model.safetensors +
                       adapter_config.json), a few hundred kB next to the full model's tens of MB
    RUN_DIR/heldout.jsonl  the test split's records ({"text", "label"} lines): labelled held-out data for the gate
    RUN_DIR/manifest.json  written last by training.export: model = the run's name, arch = {"source": "hf",
                       "path": "hf", "task": "classification"}, metrics, merge parity, adapter size

LoRA adapters are merged into the base weights (``merge_and_unload`` on a copy; the live model keeps training), so
the published network has no adapter operations and costs exactly what the base model costs to serve. The merged
model is run against the unmerged one on held-out inputs before anything is written; a disagreement beyond
``PARITY_ATOL`` stops the export. Each directory is built under a hidden staging name and renamed into place; the
previous version is moved aside first and restored at the next export if a crash fell between the two renames.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from common.errors import UserError
from common.files import atomic_copy, atomic_write_text, publish_dir, sha256_bytes, sha256_file, staging_dir
from common.manifest import FileRef
from training.batches import collate_indices
from training.models.base import ExportFiles, ModelSpec, Splits

HF_DIR = "hf"
ADAPTER_DIR = "adapter"
HELDOUT_NAME = "heldout.jsonl"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt",
                   "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")
PARITY_SAMPLES = 64
PARITY_ATOL = 1e-4  # float32 merge of rank-r updates: observed differences are ~1e-6


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def recover_dir(target: Path) -> None:
    """Undo an interrupted replacement: restore the set-aside version, drop leftover staging directories."""
    previous = _previous(target)
    if not target.exists() and previous.is_dir():
        os.rename(previous, target)
    for leftover in target.parent.glob(f".{target.name}.*.staging"):
        shutil.rmtree(leftover, ignore_errors=True)


def replace_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(staging)`` and move it into ``target``'s place, the old one aside first."""
    recover_dir(target)
    staging = staging_dir(target.parent, target.name)
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = _previous(target)
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.rename(target, previous)
    publish_dir(staging, target)
    shutil.rmtree(previous, ignore_errors=True)


def _readable(folder: Path) -> None:
    """save_pretrained may create 0600 files; what the builders and Triton's user read must be world-readable."""
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)


@torch.no_grad()
def _logits(model: nn.Module, inputs: tuple[torch.Tensor, ...], takes_types: bool) -> torch.Tensor:
    ids, mask, types = inputs
    extra = {"token_type_ids": types} if takes_types else {}
    return model(input_ids=ids, attention_mask=mask, **extra).logits.float()


def merge_parity(unmerged: nn.Module, merged: nn.Module, splits: Splits, spec: ModelSpec, takes_types: bool,
                 device: torch.device) -> dict[str, Any]:
    """Logits of the merged model against the adapter model on the first held-out records."""
    dataset = splits.test if len(splits.test) else splits.val
    count = min(PARITY_SAMPLES, len(dataset))
    worst, agree = 0.0, 0
    for start in range(0, count, 16):
        inputs, _targets = collate_indices(dataset, range(start, min(start + 16, count)), spec.collate)
        inputs = tuple(t.to(device) for t in inputs)
        a, b = _logits(unmerged, inputs, takes_types), _logits(merged, inputs, takes_types)
        worst = max(worst, float((a - b).abs().max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
    return {"samples": count, "max_abs_logit_diff": worst, "argmax_agreement": agree / max(1, count),
            "atol": PARITY_ATOL, "passed": worst <= PARITY_ATOL}


def _copy_tokenizer(base: Path, target: Path, max_length: int) -> list[str]:
    """The base model's tokenizer files, saying the length the model was fine-tuned at: ``model_max_length`` in
    ``tokenizer_config.json`` and the truncation of ``tokenizer.json``, so that whoever serves the folder truncates
    texts exactly as training did."""
    from tokenizers import Tokenizer

    copied = []
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            atomic_copy(base / name, target / name)
            copied.append(name)
    tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
    truncation = tokenizer.truncation or {}
    tokenizer.enable_truncation(max_length=max_length, stride=truncation.get("stride", 0),
                                strategy=truncation.get("strategy", "longest_first"),
                                direction=truncation.get("direction", "right"))
    atomic_write_text(target / "tokenizer.json", tokenizer.to_str())
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    atomic_write_text(config_path, json.dumps({**config, "model_max_length": max_length}, indent=2) + "\n")
    return copied


def _write_heldout(run_dir: Path, records: list) -> dict[str, Any] | None:
    """The test split as ``{"text", "label"}`` lines: held-out data the builders can gate accuracy on."""
    if not records:
        return None
    text = "".join(json.dumps({"text": r.text, "label": r.label}) + "\n" for r in records)
    path = run_dir / HELDOUT_NAME
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return {"file": HELDOUT_NAME, "sha256": sha256_bytes(text.encode("utf-8")), "records": len(records),
            "split": "test"}


def export_hf(run_dir: Path, arch: Any, module: nn.Module, splits: Splits, spec: ModelSpec) -> ExportFiles:
    """Merge (LoRA), check parity, write ``hf/`` (and ``adapter/``); the manifest fields that describe them."""
    wrapped = module.model  # the SequenceClassifier's transformers (or peft) model
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        parity = None
        if arch.lora:
            merged = copy.deepcopy(wrapped).merge_and_unload()  # a copy: the live adapters keep training
            merged.eval()
            left = sorted({n for n, m in merged.named_modules() if "lora" in type(m).__name__.lower()})
            if left:
                raise UserError(f"merging the LoRA adapters left adapter modules behind ({', '.join(left[:3])}); "
                                "nothing was exported")
            parity = merge_parity(wrapped, merged, splits, spec, module.takes_token_types, device)
            if not parity["passed"]:
                raise UserError(f"the merged model differs from the adapter model by {parity['max_abs_logit_diff']:.3g} "
                                f"in the logits on {parity['samples']} held-out records (allowed {PARITY_ATOL:g}); "
                                "nothing was exported")
        else:
            merged = wrapped
        base = Path(arch.pretrained)

        def write_hf(staging: Path) -> None:
            merged.save_pretrained(str(staging), safe_serialization=True)
            _copy_tokenizer(base, staging, arch.max_length)
            _readable(staging)

        replace_dir(run_dir / HF_DIR, write_hf)
        if arch.lora:
            def write_adapter(staging: Path) -> None:
                wrapped.save_pretrained(str(staging))
                _readable(staging)

            replace_dir(run_dir / ADAPTER_DIR, write_adapter)
    finally:
        module.train(was_training)

    weights = run_dir / HF_DIR / "model.safetensors"
    full_bytes = weights.stat().st_size
    adapter = None
    if arch.lora:
        adapter_file = run_dir / ADAPTER_DIR / "adapter_model.safetensors"
        adapter = {"dir": ADAPTER_DIR, "bytes": adapter_file.stat().st_size, "full_model_bytes": full_bytes,
                   "ratio": adapter_file.stat().st_size / full_bytes, "sha256": sha256_file(adapter_file)}
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    finetune = {
        "base_model": str(base), "base_model_sha256": splits.artifacts.get("base_model_sha256"),
        "method": "lora" if arch.lora else "full",
        "lora": arch.lora.model_dump(mode="json") if arch.lora else None,
        "parameters": total, "trainable_parameters": trainable,
        "merged": bool(arch.lora), "adapter": adapter, "merge_parity": parity,
    }
    metrics = {}
    if parity:
        metrics["merge_parity_max_abs_diff"] = parity["max_abs_logit_diff"]
        metrics["merge_parity_argmax_agreement"] = parity["argmax_agreement"]
    if adapter:
        metrics["adapter_size_ratio"] = adapter["ratio"]
    finetune["heldout"] = _write_heldout(run_dir, getattr(spec, "heldout", []))
    tokenizer = run_dir / HF_DIR / "tokenizer.json"
    return ExportFiles(
        weights=FileRef(file=f"{HF_DIR}/model.safetensors", sha256=sha256_file(weights)),
        tokenizer=FileRef(file=f"{HF_DIR}/tokenizer.json", sha256=sha256_file(tokenizer)),
        model=arch.name, arch={"source": "hf", "path": HF_DIR, "task": arch.task},
        metrics=metrics, training={"finetune": finetune})
