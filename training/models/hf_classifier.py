"""``hf_classifier``: fine-tune a pretrained Hugging Face encoder as a text classifier (full fine-tuning or LoRA).

Usually reached through ``python -m training --from-pretrained DIR --task classification --data train.jsonl``:

* the network is ``AutoModelForSequenceClassification`` loaded from DIR (disk only, never a hub): the encoder, its
  pooler (the ``[CLS]`` state through a dense + tanh layer for BERT-family models) and a new linear head with one
  output per class, the classes being the labels found in the training data (:mod:`training.hf_data`);
* full fine-tuning trains everything; with ``arch.lora`` peft wraps the chosen linear layers in rank-r adapters and
  only the adapters and the head are trainable, and a checkpoint holds only those tensors (the rest is the base model,
  whose SHA-256 the run records: a changed base model is refused on resume);
* the export (:mod:`training.finetune`) merges the adapters into the base weights and writes a plain Hugging Face
  directory ``RUN_DIR/hf/`` that the builders publish, keeps the adapter alone in ``RUN_DIR/adapter/``, and records
  the merged-versus-unmerged parity in the manifest.

The inputs are ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model takes them), INT64
[batch, sequence]; the output is ``logits`` [batch, classes].
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from common.errors import UserError
from common.manifest import TensorSpec
from training.models import register
from training.models.base import ModelSpec, Splits, StrictConfig, hash_strings

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class LoraSettings(StrictConfig):
    """peft LoRA: ``W x + (alpha / rank) * B A x`` on every linear layer named in ``target_modules``."""

    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(("query", "value"), min_length=1,
                                            description="module names (or dotted suffixes) that get adapters")


def check_model_dir(value: str) -> str:
    """Cheap structural checks of a Hugging Face model directory (the weights are loaded later)."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory (expected a Hugging Face model directory with config.json, "
                         "model.safetensors and tokenizer.json)")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} is not a Hugging Face model directory: config.json is missing")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{config}: not a JSON object ({exc})") from None
    if not model_type:
        raise ValueError(f"{config}: no model_type (expected e.g. \"bert\"); not a Hugging Face model config")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{path}: no weights (expected {' or '.join(WEIGHT_FILES)})")
    if not (path / "tokenizer.json").is_file():
        raise ValueError(f"{path}: tokenizer.json is missing (a fast tokenizer file is needed to tokenize the data "
                         "exactly as the server will)")
    return str(path.resolve())


def default_name(model_dir: str) -> str:
    path = Path(model_dir)
    base = path.parent.name if path.name.lower() in ("model", "models", "hf", "snapshot") else path.name
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "encoder"
    return (slug if slug[0].isalpha() else f"m_{slug}") + "_classifier"


class FinetuneArch(StrictConfig):
    pretrained: str = Field(description="Hugging Face model directory of the pretrained encoder")
    task: Literal["classification"] = "classification"
    name: str = Field("", pattern=r"^$|^[a-z][a-z0-9_]{0,62}$",
                      description="model name in the manifest (and so in Triton); default from the directory name")
    max_length: int = Field(128, ge=4, le=8192, description="tokens per text; longer texts are truncated")
    lora: LoraSettings | None = Field(None, description="LoRA adapters instead of full fine-tuning")

    @field_validator("pretrained")
    @classmethod
    def _model_dir(cls, value: str) -> str:
        return check_model_dir(value)

    @model_validator(mode="after")
    def _fill_name(self):
        if not self.name:
            object.__setattr__(self, "name", default_name(self.pretrained))
        return self


class FinetuneData(StrictConfig):
    train: str = Field(description=".jsonl file of {\"text\": ..., \"label\": ...} records to train on")
    val: str | None = Field(None, description="validation .jsonl; default: val_fraction of the training file")
    test: str | None = Field(None, description="test .jsonl for the final metrics; default: the validation split")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of each class held out when val is not given")
    split_seed: int = Field(0, ge=0)
    labels: tuple[str, ...] | None = Field(None, min_length=2, description="class names; default: training labels")


@functools.lru_cache(maxsize=4)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from common.files import sha256_file

    return sha256_file(path)


def base_fingerprint(model_dir: str) -> str:
    """SHA-256 over the base model's config, weights and tokenizer: what a resumed run must still find."""
    parts = []
    for name in ("config.json", *WEIGHT_FILES, "tokenizer.json"):
        path = Path(model_dir) / name
        if path.is_file():
            stat = path.stat()
            parts.append(f"{name}:{file_sha256(str(path), stat.st_size, stat.st_mtime_ns)}")
    return hash_strings(parts)


def quiet_transformers() -> None:
    """No hub access, no download bars, no load reports on stdout: a run's log stays ours."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


class SequenceClassifier(nn.Module):
    """Positional inputs in, ``(logits,)`` out: the calling convention of the trainer and the ONNX export."""

    def __init__(self, model: nn.Module, takes_token_types: bool):
        super().__init__()
        self.model = model
        self.takes_token_types = takes_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if self.takes_token_types and token_type_ids is not None else {}
        return (self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits,)


def linear_module_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


@register
class HFClassifier(ModelSpec):
    name = "hf_classifier"
    description = "fine-tune a pretrained Hugging Face encoder on labelled .jsonl text (--from-pretrained)"
    Arch = FinetuneArch
    Data = FinetuneData

    def __init__(self):
        self.labels: list[str] | None = None  # set by load_data: the head's size comes from the data
        self.pad_id = 0  # the base model's pad_token_id, also set by load_data
        self.heldout: list = []  # the test split's records, exported as RUN_DIR/heldout.jsonl for the builders' gate

    # ---- data ------------------------------------------------------------------------------------------------
    def load_data(self, data: FinetuneData, arch: FinetuneArch) -> Splits:
        from training import hf_data

        train_records = hf_data.read_jsonl(data.train)
        labels = hf_data.class_names(train_records, data.labels, data.train)
        if data.val:
            val_records, val_source = hf_data.read_jsonl(data.val), data.val
        else:
            train_records, val_records = hf_data.split_off(train_records, data.val_fraction, data.split_seed)
            val_source = data.train
        test_records, test_source = (hf_data.read_jsonl(data.test), data.test) if data.test else (val_records, val_source)
        targets = [hf_data.check_labels(records, labels, source) for records, source in
                   ((train_records, data.train), (val_records, val_source), (test_records, test_source))]
        if not val_records:
            raise UserError(f"{data.train}: too few records to hold out a validation split; give --val-data")
        tokenizer = hf_data.load_tokenizer(arch.pretrained, arch.max_length)
        config = json.loads((Path(arch.pretrained) / "config.json").read_text(encoding="utf-8"))
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if isinstance(config.get("vocab_size"), int) and vocab > config["vocab_size"]:
            raise UserError(f"{Path(arch.pretrained) / 'tokenizer.json'}: {vocab} tokens, but config.json's vocab_size is "
                            f"{config['vocab_size']}: the tokenizer does not belong to this model")
        train, val, test = (hf_data.tokenize(tokenizer, records, t) for records, t in
                            zip((train_records, val_records, test_records), targets))
        version = hash_strings(["hf-jsonl-v1", *labels, *(f"{split}\t{r.label}\t{r.text}" for split, records in
                                (("train", train_records), ("val", val_records), ("test", test_records))
                                for r in records)])
        self.labels, self.heldout = labels, list(test_records)
        self.pad_id = int(config.get("pad_token_id") or 0)
        return Splits(train, val, test, labels, version, {"base_model_sha256": base_fingerprint(arch.pretrained)})

    def decode_records(self, records, splits, arch):
        """New labelled records for the sidecar, in the training file's format and classes."""
        from training import hf_data

        parsed = hf_data.parse_records(records, "record")
        index = {name: i for i, name in enumerate(splits.labels)}
        for i, r in enumerate(parsed):
            if r.label not in index:
                raise ValueError(f"record {i}: label {r.label!r} is not one of the classes {list(splits.labels)}")
        tokenizer = hf_data.load_tokenizer(arch.pretrained, arch.max_length)
        return hf_data.tokenize(tokenizer, parsed, [index[r.label] for r in parsed])

    def collate(self, samples):
        from training import hf_data

        return hf_data.collate(samples, self.pad_id)

    # ---- network ---------------------------------------------------------------------------------------------
    def _classes(self) -> list[str]:
        if self.labels is None:
            raise RuntimeError("hf_classifier: load_data must run before build (the classes come from the data)")
        return self.labels

    def build(self, arch: FinetuneArch) -> nn.Module:
        quiet_transformers()
        from transformers import AutoConfig, AutoModelForSequenceClassification

        labels = self._classes()
        try:
            config = AutoConfig.from_pretrained(arch.pretrained, local_files_only=True, num_labels=len(labels),
                                                id2label=dict(enumerate(labels)),
                                                label2id={name: i for i, name in enumerate(labels)},
                                                problem_type="single_label_classification")
            model = AutoModelForSequenceClassification.from_pretrained(arch.pretrained, config=config,
                                                                       local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{arch.pretrained}: transformers cannot load it offline as a sequence classifier "
                            f"({str(exc).splitlines()[0][:200]})") from None
        if arch.lora:
            model = self._with_lora(model, arch)
        return SequenceClassifier(model, self._takes_token_types(arch))

    @staticmethod
    def _with_lora(model: nn.Module, arch: FinetuneArch) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        names = [name for name, _ in model.named_modules()]
        missing = [t for t in arch.lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise UserError(f"--lora-targets: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a module "
                            f"of {arch.pretrained} (linear modules there: {', '.join(linear_module_names(model))})")
        config = LoraConfig(r=arch.lora.rank, lora_alpha=arch.lora.alpha, lora_dropout=arch.lora.dropout,
                            target_modules=list(arch.lora.target_modules), task_type="SEQ_CLS")
        return get_peft_model(model, config)  # adapters + the classification head trainable, nothing else

    # ---- checkpoints: LoRA keeps only what trains ------------------------------------------------------------
    @staticmethod
    def _trainable(module: nn.Module) -> set[str]:
        return {name for name, p in module.named_parameters() if p.requires_grad}

    def _is_lora(self, module: nn.Module) -> bool:
        return any(not p.requires_grad for p in module.parameters())

    def checkpoint_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        state = module.state_dict()
        if not self._is_lora(module):
            return state
        keep = self._trainable(module)
        return {k: v for k, v in state.items() if k in keep}

    def load_checkpoint_state(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if not self._is_lora(module):
            module.load_state_dict(state)
            return
        result = module.load_state_dict(state, strict=False)
        absent = self._trainable(module) - set(state)
        if result.unexpected_keys or absent:
            raise RuntimeError(f"checkpoint does not match the LoRA model: unexpected {result.unexpected_keys[:3]}, "
                               f"missing {sorted(absent)[:3]}")

    # ---- the hand-off ----------------------------------------------------------------------------------------
    def export_files(self, run_dir, arch, module, splits):
        from training.finetune import export_hf

        return export_hf(Path(run_dir), arch, module, splits, self)

    def inputs(self, arch: FinetuneArch) -> list[TensorSpec]:
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if self._takes_token_types(arch) else [])
        return [TensorSpec(name=n, dtype="int64", shape=("batch", "sequence")) for n in names]

    @staticmethod
    def _takes_token_types(arch: FinetuneArch) -> bool:
        config = json.loads((Path(arch.pretrained) / "config.json").read_text(encoding="utf-8"))
        return int(config.get("type_vocab_size", 0) or 0) > 1

    def outputs(self, arch: FinetuneArch) -> list[TensorSpec]:
        return [TensorSpec(name="logits", dtype="float32", shape=("batch", len(self._classes())))]

    def example_inputs(self, arch: FinetuneArch, batch_size: int, generator: torch.Generator | None = None):
        length = min(16, arch.max_length)
        ids = torch.randint(1000, 2000, (batch_size, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1:, length // 2:] = 0
        return ids, mask, torch.zeros_like(ids)

    def preprocessing(self, arch: FinetuneArch, splits: Splits) -> dict:
        return {"max_length": arch.max_length, "pad_id": self.pad_id, "tokenizer": "hf/tokenizer.json"}
