"""Models the factory-string tests build from outside any registry: ``tests.builders.factory_models:NAME``."""
from __future__ import annotations

import torch
from torch import nn


class TinyRegressor(nn.Module):
    """Generic tensors in, tensors out: ``features`` [batch, 6] → ``mean`` [batch, 2] and ``scale`` [batch, 2]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, features):
        out = self.body(features)
        return out[:, :2], torch.nn.functional.softplus(out[:, 2:])


def tiny_regressor() -> nn.Module:
    return TinyRegressor()


def not_a_module():
    return "a string"


class TinyClassifier(nn.Module):
    """``x`` [batch, 4] → ``logits`` and ``probabilities`` [batch, 3]."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        logits = self.linear(x)
        return logits, torch.softmax(logits, dim=-1)
