"""A Hugging Face model directory, loaded with ``transformers`` from disk only (never from the hub).

Needed in ``DIR``: ``config.json``, the weights (``model.safetensors``) and ``tokenizer.json`` (the ``tokenizers`` file
the served tokenizer step runs). The sentence-transformers layout is honoured: ``modules.json`` names the
``Pooling`` module whose ``config.json`` says how token vectors become one vector (mean, CLS, max, mean/sqrt(len)),
and ``sentence_bert_config.json`` gives the maximum sequence length.

* task ``embedding``: ``AutoModel`` + that pooling + L2 normalisation, all inside the exported graph; inputs
  ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model has token types), output ``embedding``
  ``[batch, hidden]``;
* task ``classification``: ``AutoModelForSequenceClassification``; outputs ``logits`` and ``probabilities``, labels
  from ``id2label`` in ``config.json`` (or given by a training run's manifest);
* task ``generic`` is not offered for a directory (its outputs would be the library's internal structure).

``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set before ``transformers`` is imported and every load passes
``local_files_only=True``: an accidental download fails at once instead of hanging on the network.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.files import sha256_file
from common.manifest import TensorSpec
from builders.sources.base import HeldOut, ModelSource, Preprocessing, Signature, generated_heldout

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def set_offline() -> None:
    """No hub access from here on: a missing file must fail loudly, not download."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, (dict, list)):
        raise UserError(f"{path}: expected a JSON object")
    return data


def sentence_transformers_layout(root: Path) -> dict:
    """Pooling mode, normalisation and max length from ``modules.json`` + its Pooling config (empty if absent)."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise UserError(f"{modules_file}: expected a JSON list of modules")
    out: dict = {"normalize": False}
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            config_file = root / module.get("path", "") / "config.json"
            if not config_file.is_file():
                raise UserError(f"{modules_file}: the Pooling module's {config_file} is missing "
                                "(expected its pooling_mode_* settings)")
            pooling = _read_json(config_file)
            modes = [mode for key, mode in POOLING_MODES.items() if pooling.get(key)]
            if len(modes) != 1:
                raise UserError(f"{config_file}: exactly one of {', '.join(POOLING_MODES)} must be true "
                                f"(got {modes or 'none'})")
            out["pooling"] = modes[0]
            out["pooling_file"] = str(config_file)
        elif kind.endswith(".Normalize"):
            out["normalize"] = True
        elif kind.endswith(".Transformer") and module.get("path"):
            raise UserError(f"{modules_file}: the Transformer module lives in {module['path']!r}; pass that "
                            "folder as --hf-dir")
    bert_config = root / "sentence_bert_config.json"
    if bert_config.is_file():
        max_length = _read_json(bert_config).get("max_seq_length")
        if max_length:
            out["max_length"] = int(max_length)
    return out


def _torch_modules():
    import torch
    from torch import nn

    class Embedder(nn.Module):
        """Encoder → pooling over real tokens → L2 normalisation: one graph, one ``embedding`` output."""

        def __init__(self, encoder, pooling: str, token_types: bool):
            super().__init__()
            self.encoder, self.pooling, self.token_types = encoder, pooling, token_types

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.token_types:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = (hidden + (keep - 1.0) * 1e9).max(dim=1).values
            else:
                total = (hidden * keep).sum(dim=1)
                count = keep.sum(dim=1).clamp(min=1e-9)
                pooled = total / (count.sqrt() if self.pooling == "mean_sqrt_len" else count)
            return (torch.nn.functional.normalize(pooled, p=2.0, dim=-1),)

    class Classifier(nn.Module):
        """Sequence classifier → ``logits`` and ``probabilities`` (softmax inside the graph)."""

        def __init__(self, model, token_types: bool):
            super().__init__()
            self.model, self.token_types = model, token_types

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.token_types:
                kwargs["token_type_ids"] = token_type_ids
            logits = self.model(**kwargs).logits
            return logits, torch.softmax(logits, dim=-1)

    return Embedder, Classifier


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("._-") or "model"
    return name


class HuggingFaceSource(ModelSource):
    kind = "hf"

    def __init__(self, root: str | Path, task: str, name: str | None = None, heldout: str | Path | None = None,
                 labels: list[str] | None = None):
        set_offline()
        self.root = root = Path(root)
        if task not in ("embedding", "classification"):
            raise UserError(f"--task {task!r} is not offered for a Hugging Face directory (expected embedding or "
                            "classification)")
        if not root.is_dir():
            raise UserError(f"--hf-dir {root} is not a directory (expected a Hugging Face model folder with "
                            "config.json, model.safetensors and tokenizer.json)")
        for required in ("config.json", "tokenizer.json"):
            if not (root / required).is_file():
                raise UserError(f"{root / required} is missing: a Hugging Face model folder needs config.json, "
                                "model.safetensors and tokenizer.json")
        weights = next((root / f for f in WEIGHT_FILES if (root / f).is_file()), None)
        if weights is None:
            raise UserError(f"{root / WEIGHT_FILES[0]} is missing: a Hugging Face model folder needs its weights "
                            f"({' or '.join(WEIGHT_FILES)})")
        self.config = _read_json(root / "config.json")
        self.layout = sentence_transformers_layout(root)
        self.weights = weights
        self.name = _safe_name(name or root.name)
        self._heldout_path = heldout
        self._model = None
        self._reference = None
        self._task = task
        max_length = self.layout.get("max_length") or self._tokenizer_max_length() or \
            self.config.get("max_position_embeddings") or 512
        max_length = min(int(max_length), int(self.config.get("max_position_embeddings") or max_length))
        token_types = int(self.config.get("type_vocab_size") or 0) > 0
        self.token_types = token_types
        inputs = [TensorSpec(name="input_ids", dtype="int64", shape=("batch", "sequence")),
                  TensorSpec(name="attention_mask", dtype="int64", shape=("batch", "sequence"))]
        if token_types:
            inputs.append(TensorSpec(name="token_type_ids", dtype="int64", shape=("batch", "sequence")))
        pad_id = int(self.config.get("pad_token_id") or 0)
        vocab = self.config.get("vocab_size")
        preprocessing = Preprocessing(tokenizer_file=root / "tokenizer.json", max_length=max_length, pad_id=pad_id,
                                      pad_values={"attention_mask": 0, "token_type_ids": 0},
                                      vocab_size=vocab if isinstance(vocab, int) and vocab > 0 else None)
        hidden = self.config.get("hidden_size") or self.config.get("dim") or self.config.get("d_model")
        if task == "embedding":
            if not hidden:
                raise UserError(f"{root / 'config.json'}: field 'hidden_size' is missing (expected the encoder's "
                                "vector size for task embedding)")
            outputs = [TensorSpec(name="embedding", dtype="float32", shape=("batch", int(hidden)))]
            labels = []
        else:
            id2label = self.config.get("id2label") or {}
            if labels is None:
                try:
                    labels = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
                except (TypeError, ValueError):
                    raise UserError(f"{root / 'config.json'}: field 'id2label' must map class indexes to names") from None
            if not labels:
                raise UserError(f"{root / 'config.json'}: field 'id2label' is missing (expected the class names of "
                                "a classification model)")
            classes = len(labels)
            outputs = [TensorSpec(name="logits", dtype="float32", shape=("batch", classes)),
                       TensorSpec(name="probabilities", dtype="float32", shape=("batch", classes))]
        self.signature = Signature(task=task, inputs=inputs, outputs=outputs, labels=labels,
                                   preprocessing=preprocessing)
        self._check_vocabulary()
        self.origin = {"kind": self.kind, "path": str(root.resolve()), "weights_sha256": sha256_file(weights),
                       "tokenizer_sha256": sha256_file(root / "tokenizer.json"),
                       "config_sha256": sha256_file(root / "config.json"),
                       "pooling": self.layout.get("pooling", "mean") if task == "embedding" else None}

    def architecture(self) -> dict:
        vocab = self.config.get("vocab_size")
        return {"vocab_size": int(vocab)} if isinstance(vocab, int) else {}

    def _tokenizer_max_length(self) -> int | None:
        path = self.root / "tokenizer_config.json"
        if path.is_file():
            value = _read_json(path).get("model_max_length")
            if isinstance(value, int) and value < 100_000:
                return value
        return None

    def _check_vocabulary(self) -> None:
        from builders.sources.heldout import load_tokenizer

        vocab = self.config.get("vocab_size")
        tokenizer = load_tokenizer(self.root / "tokenizer.json", None)
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if isinstance(vocab, int) and size > vocab:
            raise UserError(f"{self.root / 'tokenizer.json'}: the tokenizer has {size} tokens but config.json field "
                            f"'vocab_size' is {vocab}: the tokenizer does not belong to this model (expected at most "
                            f"{vocab} tokens)")

    def module(self):
        if self._model is not None:
            return self._model
        import torch

        set_offline()
        import transformers

        transformers.utils.logging.disable_progress_bar()  # the build prints its own progress lines
        Embedder, Classifier = _torch_modules()
        loader = transformers.AutoModel if self._task == "embedding" else transformers.AutoModelForSequenceClassification
        config_file = self.root / "config.json"
        try:
            model = loader.from_pretrained(str(self.root), local_files_only=True, dtype=torch.float32)
        except (ValueError, KeyError, OSError, ImportError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{config_file}: transformers {transformers.__version__} cannot load this model offline "
                            f"(field 'model_type' {self.config.get('model_type')!r}, architectures "
                            f"{self.config.get('architectures')}): {first[:300]}") from None
        model.eval()
        if self._task == "embedding":
            wrapped = Embedder(model, self.layout.get("pooling", "mean"), self.token_types)
        else:
            wrapped = Classifier(model, self.token_types)
        self._model = wrapped.eval()
        return self._model

    def example_inputs(self, batch_size: int) -> tuple:
        import torch

        from builders.sources.base import generated_inputs

        return tuple(torch.from_numpy(a) for a in generated_inputs(self.signature, batch_size, seed=0, length=16))

    def heldout(self) -> HeldOut:
        if self._heldout_path is not None:
            from builders.sources.heldout import read_heldout

            return read_heldout(self._heldout_path, self.signature)
        return generated_heldout(self.signature)

    def reference_embeddings(self, texts: list[str]) -> np.ndarray | None:
        """sentence-transformers' own ``encode`` (normalised): the external reference for embedding parity."""
        if self._task != "embedding" or not self.layout or not texts:
            return None
        if self._reference is not None and self._reference[0] == texts:
            return self._reference[1]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            return None
        set_offline()
        model = SentenceTransformer(str(self.root), device="cpu", local_files_only=True)
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        self._reference = (texts, np.asarray(vectors, dtype=np.float32))
        return self._reference[1]
