"""Progress of the current epoch: a tqdm bar on a terminal, a periodic line in logs (docker, CI, pytest).

Both show loss, learning rate, samples/s (all processes) and the ETA of the epoch. A tqdm bar written to a log file
becomes one unreadable carriage-return line, so off a terminal a plain line is printed every ``log_every_seconds``.
"""
from __future__ import annotations

import sys
import time


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, total: int, start: int, enabled: bool, bar: str,
                 log_every_seconds: float):
        self.epoch, self.epochs, self.total = epoch, epochs, total
        self.done = start
        self.enabled = enabled
        self.log_every = log_every_seconds
        self.started = self.last_line = time.monotonic()
        self.done_at_start = start
        use_bar = bar == "on" or (bar == "auto" and sys.stderr.isatty())
        self.bar = None
        if enabled and use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=f"epoch {epoch}/{epochs}", unit="batch",
                            dynamic_ncols=True, leave=False, file=sys.stderr)

    def update(self, batches: int, loss: float, lr: float, samples_per_second: float) -> None:
        self.done += batches
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{samples_per_second:,.0f}",
                                 refresh=False)
            self.bar.update(batches)
            return
        now = time.monotonic()
        if now - self.last_line >= self.log_every:
            self.last_line = now
            rate = (self.done - self.done_at_start) / max(1e-9, now - self.started)
            eta = _eta((self.total - self.done) / rate) if rate > 0 else "?"
            print(f"epoch {self.epoch}/{self.epochs} batch {self.done}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                  f"{samples_per_second:,.0f} samples/s ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
