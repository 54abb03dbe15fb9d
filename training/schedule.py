"""Learning rate per optimizer step: linear warm-up, then cosine or linear decay, constant, or reduce-on-plateau.

Written as one small class rather than chaining torch schedulers because a run needs all of these at once and in one
state: warm-up combined with plateau reduction (torch's ``SequentialLR`` cannot chain ``ReduceLROnPlateau``), and
*segments*: the sidecar trains in rounds as new data arrives, each round with its own warm-up and decay horizon. The
rate is a pure function of the optimizer step and a few numbers in :meth:`state_dict`, so a resumed run continues
with exactly the rate the uninterrupted run would have used.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from training.config import ScheduleConfig


class LRSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleConfig, base_lr: float):
        self.optimizer = optimizer
        self.config = config
        self.base_lr = base_lr
        self.segment_start = 0
        self.segment_steps = 0
        self.warmup = 0
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad_epochs = 0

    def start_segment(self, start_step: int, steps: int) -> None:
        """Begin a decay horizon of ``steps`` optimizer steps at ``start_step`` (a run is usually one segment)."""
        self.segment_start = start_step
        self.segment_steps = max(1, steps)
        c = self.config
        self.warmup = c.warmup_steps if c.warmup_steps is not None else int(round(c.warmup_fraction * self.segment_steps))
        self.warmup = min(self.warmup, self.segment_steps)

    def extend_segment(self, steps: int) -> None:
        """Stretch the current horizon (the run's epoch budget grew), keeping its start and warm-up."""
        self.segment_steps = max(self.segment_steps, steps)

    def factor(self, step: int) -> float:
        s = step - self.segment_start
        f = 1.0
        if self.warmup and s < self.warmup:
            f = (s + 1) / self.warmup
        elif self.config.kind in ("cosine", "linear"):
            progress = min(1.0, max(0.0, (s - self.warmup) / max(1, self.segment_steps - self.warmup)))
            shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.config.kind == "cosine" else 1.0 - progress
            f = self.config.min_lr_ratio + (1.0 - self.config.min_lr_ratio) * shape
        if self.config.kind == "plateau":
            f *= self.plateau_scale
        return f

    def apply(self, step: int) -> float:
        """Set the optimizer's rate for optimizer step ``step`` (0-based) and return it."""
        lr = self.base_lr * self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def epoch_end(self, value: float, higher_is_better: bool) -> None:
        """Plateau bookkeeping: reduce the rate after ``plateau_patience`` epochs without improvement."""
        if self.config.kind != "plateau":
            return
        improved = self.plateau_best is None or (value > self.plateau_best if higher_is_better else value < self.plateau_best)
        if improved:
            self.plateau_best, self.plateau_bad_epochs = value, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.config.plateau_patience:
            self.plateau_scale *= self.config.plateau_factor
            self.plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "segment_start": self.segment_start, "segment_steps": self.segment_steps,
                "warmup": self.warmup, "plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
