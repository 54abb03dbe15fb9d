"""``digits``: a small CNN on scikit-learn's bundled 8×8 handwritten digit images (real data, no download).

Input ``image`` is FLOAT32 [batch, 1, 8, 8] with the raw pixel intensities 0..16 of the data set; the network scales
them itself, so clients send what the data set holds. Outputs are ``logits`` and ``probabilities`` [batch, 10].
Split: 70 % train, 15 % validation (early stopping, best checkpoint), 15 % test (held-out accuracy), stratified with a
fixed split seed so every run and every builder sees the same held-out images.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from common.files import sha256_bytes
from common.manifest import TensorSpec
from training.models import register
from training.models.base import ModelSpec, Splits, StrictConfig, hash_strings, record_label


class DigitsArch(StrictConfig):
    channels: tuple[int, int] = (32, 64)
    hidden: int = Field(128, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class DigitsData(StrictConfig):
    split_seed: int = 0
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class DigitsCNN(nn.Module):
    def __init__(self, arch: DigitsArch):
        super().__init__()
        c1, c2 = arch.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(arch.dropout), nn.Linear(c2 * 4 * 4, arch.hidden), nn.ReLU(),
            nn.Dropout(arch.dropout), nn.Linear(arch.hidden, 10),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.features(image / 16.0))
        return logits, torch.softmax(logits, dim=-1)


@register
class Digits(ModelSpec):
    name = "digits"
    description = "CNN on scikit-learn's 8x8 digits images (10 classes)"
    Arch = DigitsArch
    Data = DigitsData

    def inputs(self, arch: DigitsArch) -> list[TensorSpec]:
        return [TensorSpec(name="image", dtype="float32", shape=("batch", 1, 8, 8))]

    def outputs(self, arch: DigitsArch) -> list[TensorSpec]:
        return [
            TensorSpec(name="logits", dtype="float32", shape=("batch", 10)),
            TensorSpec(name="probabilities", dtype="float32", shape=("batch", 10)),
        ]

    def build(self, arch: DigitsArch) -> nn.Module:
        return DigitsCNN(arch)

    def load_data(self, data: DigitsData, arch: DigitsArch) -> Splits:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = bunch.images.astype(np.float32)[:, None, :, :]
        targets = bunch.target.astype(np.int64)
        idx = np.arange(len(targets))
        held_out = data.val_fraction + data.test_fraction
        train_idx, rest_idx = train_test_split(idx, test_size=held_out, stratify=targets, random_state=data.split_seed)
        val_idx, test_idx = train_test_split(
            rest_idx, test_size=data.test_fraction / held_out, stratify=targets[rest_idx], random_state=data.split_seed
        )

        def subset(ix: np.ndarray) -> TensorDataset:
            return TensorDataset(torch.from_numpy(images[ix]), torch.from_numpy(targets[ix]))

        version = hash_strings(["digits-v1", sha256_bytes(images.tobytes()), sha256_bytes(targets.tobytes()),
                                ",".join(map(str, train_idx)), ",".join(map(str, val_idx)), ",".join(map(str, test_idx))])
        return Splits(subset(train_idx), subset(val_idx), subset(test_idx), [str(d) for d in range(10)], version, {})

    def decode_records(self, records, splits, arch):
        """``{"image": 8x8 (or 64) intensities 0..16, "label": "3" or 3}`` per record."""
        images, targets = [], []
        for i, record in enumerate(records):
            try:
                image = np.asarray(record.get("image"), dtype=np.float32).reshape(1, 8, 8)
            except (TypeError, ValueError):
                raise ValueError(f"record {i}: image must be 8x8 (or 64) numbers 0..16") from None
            if not np.isfinite(image).all() or image.min() < 0 or image.max() > 16:
                raise ValueError(f"record {i}: image values must be finite and within 0..16")
            images.append(image)
            targets.append(record_label(record, i, splits.labels))
        return TensorDataset(torch.from_numpy(np.stack(images)), torch.tensor(targets, dtype=torch.int64))

    def collate(self, samples):
        images = torch.stack([s[0] for s in samples])
        targets = torch.stack([s[1] for s in samples])
        return (images,), targets

    def example_inputs(self, arch: DigitsArch, batch_size: int, generator: torch.Generator | None = None):
        return (torch.randint(0, 17, (batch_size, 1, 8, 8), generator=generator).float(),)
