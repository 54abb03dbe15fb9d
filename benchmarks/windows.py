"""Measurement windows that fit the point being measured.

A closed-loop point at concurrency ``c`` whose requests take ``L`` seconds completes about ``c / L`` requests per
second, and each caller completes one request every ``L`` seconds. With a fixed window of a few seconds, a slow point
(MiniLM at concurrency 64 on 2 cores: ``L`` above a second; a 32-sentence batch mix: several seconds) completes so few
requests per caller that its throughput and percentiles are noise, or no request completes at all. So each point's
window is stretched to cover several request times, and its warm-up to cover at least one (every caller is then in
steady state when the measurement starts). ``L`` is estimated from the best rate the same configuration reached at
the points measured before (points run in increasing concurrency), and a cap keeps a whole comparison within its
time budget.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowPolicy:
    duration_s: float  # the shortest measured window (the command's --duration)
    warmup_s: float  # the shortest warm-up (--warmup)
    rounds: float = 5.0  # request times each caller completes in the window, at least
    max_duration_s: float = 24.0
    max_warmup_s: float = 8.0

    def fit(self, concurrency: int, sentences_per_request: int, sentences_per_s: float | None) -> tuple[float, float]:
        """``(warmup_s, duration_s)`` for a point; ``sentences_per_s`` is the configuration's best rate so far (``None``
        or 0 before its first point: the minimum window)."""
        if not sentences_per_s or sentences_per_s <= 0:
            return self.warmup_s, self.duration_s
        request_s = concurrency * sentences_per_request / sentences_per_s  # expected time of one request
        duration = min(max(self.duration_s, self.rounds * request_s), max(self.duration_s, self.max_duration_s))
        warmup = min(max(self.warmup_s, 1.5 * request_s), max(self.warmup_s, self.max_warmup_s))
        return round(warmup, 2), round(duration, 2)


class RateBook:
    """The rates each configuration reached so far, to size its next window: the last point's is the estimate (on
    a CPU a configuration's rate often falls as concurrency grows, so its best rate would size windows too short)."""

    def __init__(self):
        self._best: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def best(self, config: str) -> float | None:
        return self._best.get(config)

    def last(self, config: str) -> float | None:
        return self._last.get(config)

    def note(self, config: str, sentences_per_s: float) -> None:
        self._last[config] = sentences_per_s
        if sentences_per_s > self._best.get(config, 0.0):
            self._best[config] = sentences_per_s


def refit_rate(measured_sentences_per_s: float) -> float:
    """The rate to size a second window with, after a first one completed too few requests: the rate just measured,
    or, when nothing completed, a rate so low that the window reaches its cap."""
    return measured_sentences_per_s if measured_sentences_per_s > 0 else 1e-6
