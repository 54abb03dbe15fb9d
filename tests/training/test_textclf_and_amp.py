"""The text model end to end in-process (tokenizer saved with checkpoints and export), and AMP on CUDA."""
from __future__ import annotations

import json

import pytest
import torch

from training.checkpoint import CheckpointStore
from training.config import resolve
from training.distributed import DistContext, setup
from training.trainer import Trainer

SMALL_TEXTCLF = {"arch.d_model": 32, "arch.heads": 2, "arch.layers": 1, "arch.ff_dim": 64, "arch.max_length": 48,
                 "arch.vocab_size": 2048, "data.train_size": 384, "data.val_size": 128, "data.test_size": 128}


def train(tmp_path, model: str, ctx: DistContext, **overrides):
    config = resolve(None, {"model": model, "epochs": 3, "threads": 1, "progress.bar": "off", **overrides})
    trainer = Trainer(config, tmp_path / "run", ctx)
    try:
        trainer.setup()
        trainer.train()
        summary = trainer.finish()
    finally:
        trainer.close()
    return trainer, summary


def test_textclf_saves_its_tokenizer_with_checkpoints_and_export(tmp_path):
    from tokenizers import Tokenizer

    trainer, summary = train(tmp_path, "textclf", DistContext(0, 0, 1, torch.device("cpu"), None),
                             **SMALL_TEXTCLF, batch_size=32, epochs=6)
    run_dir = tmp_path / "run"
    checkpoint = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest().payload
    tokenizer_json = checkpoint["artifacts"]["tokenizer_json"]
    assert (run_dir / "tokenizer.json").read_text() == tokenizer_json
    tokenizer = Tokenizer.from_str(tokenizer_json)
    assert tokenizer.encode("My invoice is wrong").ids[0] == 2  # [CLS] first, as the server will tokenize
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["file"] == "tokenizer.json" and manifest["preprocessing"]["max_length"] == 48
    assert summary["test_accuracy"] > 0.6  # 4 classes: well above chance (25 %) after a few short epochs
    batch_lengths = {len(trainer.train_set[i][0]) for b in trainer.planner.plan(0).batches[:3] for i in b}
    assert len(batch_lengths) > 1  # variable-length sequences reach the model


@pytest.mark.gpu
@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_on_cuda_trains_and_checkpoints_the_scaler(tmp_path, amp, dtype):
    ctx = setup("cuda")
    trainer, summary = train(tmp_path, "digits", ctx, amp=amp, device="cuda")
    assert trainer.autocast_dtype == dtype
    checkpoint = CheckpointStore(tmp_path / "run" / "checkpoints", identity=None, warn=print).latest().payload
    assert bool(checkpoint["scaler"]) == (amp == "fp16")  # GradScaler state (scale, growth tracker) only for fp16
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert summary["test_accuracy"] > 0.8
