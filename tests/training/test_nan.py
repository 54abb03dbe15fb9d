"""A non-finite loss stops the run with an error naming the step; nothing non-finite is ever written."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import CheckpointStore
from training.config import resolve
from training.distributed import DistContext
from training.trainer import Trainer, TrainingDiverged


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = resolve(None, {"model": "digits", "max_train_samples": 256, "epochs": 3, "threads": 1,
                            "checkpoint.every_steps": 2, "progress.bar": "off"})
    trainer = Trainer(config, tmp_path / "run", DistContext(0, 0, 1, torch.device("cpu"), None))
    trainer.setup()
    forwards = {"train": 0}

    def poison_on_the_sixth_training_forward(module, _inputs):
        if module.training:
            forwards["train"] += 1
            if forwards["train"] == 6:  # step 6 = epoch 2, batch 2 (4 batches of 64 per epoch)
                with torch.no_grad():
                    module.head[-1].weight.fill_(float("nan"))

    trainer.module.register_forward_pre_hook(poison_on_the_sixth_training_forward)
    try:
        with pytest.raises(TrainingDiverged) as err:
            trainer.train()
    finally:
        trainer.close()
    message = str(err.value)
    assert "optimizer step 6 (epoch 2, batch 2)" in message and "the loss is nan" in message
    assert "ckpt-e0001-b000000-s000000004.pt" in message  # the last good checkpoint is named
    store = CheckpointStore(tmp_path / "run" / "checkpoints", identity=None, warn=print)
    steps = sorted(int(p.name.split("-s")[1][:9]) for p in store.listing())
    assert steps and max(steps) < 6
    for path in store.listing():
        payload = store.read(path).payload
        assert all(torch.isfinite(t).all() for t in payload["model"].values())
    exported = load_file(str(tmp_path / "run" / "model.safetensors"))  # the best weights of epoch 1
    assert all(torch.isfinite(t).all() for t in exported.values())


def test_cli_reports_divergence_in_one_line(tmp_path, monkeypatch, capsys):
    from training import cli

    def diverge(self):
        raise TrainingDiverged("training diverged at optimizer step 3 (epoch 1, batch 3): the loss is inf")

    monkeypatch.setattr(Trainer, "train", diverge)
    with pytest.raises(SystemExit) as exit_info:
        from common.errors import run_cli

        run_cli(cli.main, ["--model", "digits", "--run-dir", str(tmp_path / "run"), "--max-train-samples", "64",
                           "--progress", "off"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: training diverged at optimizer step 3 (epoch 1, batch 3): the loss is inf"
