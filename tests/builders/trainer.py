"""A few hundred optimizer steps on a model's own collate batches, then the real export: run dirs for the tests.

The platform's trainer is a separate component; the builders only need what it hands over (manifest.json +
model.safetensors [+ tokenizer.json]), which :func:`training.export.export_weights` writes exactly as the trainer does.
"""
from __future__ import annotations

from pathlib import Path

import torch

from training import models
from training.export import export_weights


def train_run(run_dir: Path, model: str, arch: dict, data: dict, steps: int, seed: int = 0, lr: float = 3e-3,
              batch_size: int = 64) -> Path:
    """Train ``model`` for ``steps`` AdamW steps and export it into ``run_dir``; returns ``run_dir``."""
    torch.set_num_threads(1)  # tiny models: one thread avoids oversubscription on a shared 2-core machine
    torch.manual_seed(seed)
    spec = models.get(model)
    arch_cfg = spec.Arch(**arch)
    data_cfg = spec.Data(**data)
    splits = spec.load_data(data_cfg, arch_cfg)
    net = spec.build(arch_cfg)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=generator,
                                         collate_fn=spec.collate)
    net.train()
    done = 0
    while done < steps:
        for inputs, targets in loader:
            loss = torch.nn.functional.cross_entropy(net(*inputs)[0], targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, targets in torch.utils.data.DataLoader(splits.val, batch_size=256, collate_fn=spec.collate):
            correct += int((net(*inputs)[0].argmax(-1) == targets).sum())
            total += len(targets)
    run_dir.mkdir(parents=True, exist_ok=True)
    export_weights(run_dir, spec, arch_cfg, data_cfg, net, splits, {"val_accuracy": correct / total},
                   {"steps": steps, "seed": seed}, None)
    return run_dir


DIGITS_ARCH = {"channels": (8, 16), "hidden": 32}
TEXTCLF_ARCH = {"d_model": 32, "heads": 2, "layers": 1, "ff_dim": 64}
TEXTCLF_DATA = {"train_size": 2000, "val_size": 300, "test_size": 400}
