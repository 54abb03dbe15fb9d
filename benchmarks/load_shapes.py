"""Load shapes for Locust: a staircase (find the knee) and a linear ramp (watch latency grow with load).

Locust uses the first LoadTestShape class it finds in the locustfile, so the locustfile binds one of these only when
the run asks for it.
"""
from __future__ import annotations

import math

from locust import LoadTestShape

from benchmarks.load_settings import LoadSettings


class StepShape(LoadTestShape):
    """Add ``step_users`` users every ``step_duration_s`` seconds up to ``users``, for ``duration_s`` in total."""

    settings: LoadSettings

    def tick(self):
        s = self.settings
        elapsed = self.get_run_time()
        if elapsed >= s.duration_s:
            return None
        step = int(elapsed // s.step_duration_s) + 1
        return min(s.users, step * s.step_users), s.spawn_rate


class RampShape(LoadTestShape):
    """Grow linearly from 1 user to ``users`` over ``duration_s`` seconds."""

    settings: LoadSettings

    def tick(self):
        s = self.settings
        elapsed = self.get_run_time()
        if elapsed >= s.duration_s:
            return None
        users = max(1, math.ceil(s.users * elapsed / s.duration_s))
        return users, s.spawn_rate
