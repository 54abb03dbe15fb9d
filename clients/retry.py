"""Run one call as a series of attempts inside a time budget: deadlines, full-jitter backoff, retryable-only.

The same :class:`Attempts` bookkeeping drives the synchronous runner (:func:`run_sync`) and the asyncio one
(:func:`run_async`), so both protocols and both styles retry identically. An attempt is a function of its deadline in
seconds; it raises whatever its transport raises, and :func:`clients.errors.classify` decides what happens next:

* retryable (unavailable, refused, reset, 502/503/504, queue full or queue timeout): pause, then try again, while the
  budget and ``max_attempts`` allow;
* anything else: raise at once, as a :class:`~clients.errors.ClientError` that names the URL, the model and what
  the server said.

A call never runs past its budget: each attempt's deadline is ``min(timeout_s, time left)``, a pause never reaches
past the budget, and when too little time is left for another attempt the call stops with the last failure.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from clients import metrics
from clients.errors import (ClientError, DeadlineExceeded, Failure, InvalidRequest, ModelNotFound, ServerError,
                            ServerUnavailable, classify)
from clients.settings import RetryPolicy

T = TypeVar("T")

# Below this much budget another attempt cannot do useful work; stop with the last failure instead.
MIN_ATTEMPT_S = 0.005


@dataclass
class CallContext:
    """What a call is about, for error messages and metric labels."""

    what: str  # "infer", "model metadata", "server ready", ...
    url: str
    protocol: str
    model: str = ""

    def target(self) -> str:
        where = f"{self.protocol}://{self.url}"
        return f"model '{self.model}' at {where}" if self.model else where


@dataclass
class Attempts:
    """Clock, counters and backoff of one call."""

    policy: RetryPolicy
    context: CallContext
    rng: random.Random = field(default_factory=random.Random)
    started: float = field(default_factory=time.monotonic)
    count: int = 0
    last_deadline: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    def remaining(self) -> float:
        return self.policy.budget_s - (time.monotonic() - self.started)

    def next_deadline(self) -> float:
        """Deadline of the attempt about to start (call once per attempt)."""
        self.count += 1
        self.last_deadline = max(MIN_ATTEMPT_S, min(self.policy.timeout_s, self.remaining()))
        return self.last_deadline

    def pause_after(self, failure: Failure) -> float | None:
        """Seconds to wait before the next attempt, or None when the call must stop with ``failure``."""
        self.failures.append(failure)
        if not failure.retryable:
            return None
        if self.policy.max_attempts is not None and self.count >= self.policy.max_attempts:
            return None
        bound = min(self.policy.backoff_max_s,
                    self.policy.backoff_initial_s * self.policy.backoff_multiplier ** (self.count - 1))
        pause = self.rng.uniform(0.0, bound)
        left = self.remaining()
        if left - pause < MIN_ATTEMPT_S:
            return None
        metrics.count_retry(self.context.model, self.context.protocol, failure.reason)
        return pause

    def error(self, failure: Failure) -> ClientError:
        """The exception that ends the call with ``failure`` (its ``attempts`` set)."""
        exc = self._error(failure)
        exc.attempts = self.count
        return exc

    def _error(self, failure: Failure) -> ClientError:
        ctx = self.context
        elapsed = time.monotonic() - self.started
        tries = f"{self.count} attempt{'s' if self.count != 1 else ''} in {elapsed:.1f} s"
        if failure.kind == "not_found":
            return ModelNotFound(f"{ctx.what}: {failure.detail} at {ctx.protocol}://{ctx.url} "
                                 "(list what it serves with `python -m clients models --url ...`)")
        if failure.kind == "invalid":
            return InvalidRequest(f"{ctx.what} rejected by {ctx.target()}: {failure.detail}")
        if failure.kind == "deadline":
            return DeadlineExceeded(f"{ctx.what}: no answer from {ctx.target()} within the {self.last_deadline:.3g} s deadline "
                                    f"({tries}; raise --timeout/--budget or retry.timeout_s/budget_s if the model is "
                                    "this slow)")
        if failure.retryable:
            budget = f"budget {self.policy.budget_s:g} s"
            if self.policy.max_attempts is not None and self.count >= self.policy.max_attempts:
                budget = f"max_attempts {self.policy.max_attempts}"
            cls = ServerUnavailable if failure.kind == "unavailable" else ServerError
            return cls(f"{ctx.what}: {ctx.target()} unavailable after {tries} ({budget}): {failure.detail}")
        if failure.kind == "unavailable":  # not retryable, e.g. the host name does not resolve
            return ServerUnavailable(f"{ctx.what}: cannot reach {ctx.protocol}://{ctx.url}: {failure.detail}")
        return ServerError(f"{ctx.what} failed at {ctx.target()}: {failure.detail}")


def run_sync(attempt: Callable[[float], T], state: Attempts) -> T:
    """Call ``attempt(deadline_s)`` until it succeeds or the policy says stop; record latency and retries."""
    ok = False
    try:
        while True:
            try:
                result = attempt(state.next_deadline())
                ok = True
                return result
            except ClientError as exc:
                exc.attempts = state.count
                raise
            except Exception as exc:  # every transport error is classified; unknown ones are not retried
                failure = classify(exc)
                pause = state.pause_after(failure)
                if pause is None:
                    raise state.error(failure) from None
                time.sleep(pause)
    finally:
        metrics.observe_call(state.context.model, state.context.protocol, ok, time.monotonic() - state.started)


async def run_async(attempt: Callable[[float], Awaitable[T]], state: Attempts) -> T:
    """The asyncio twin of :func:`run_sync`; each attempt is also bounded with ``asyncio.timeout``."""
    ok = False
    try:
        while True:
            deadline = state.next_deadline()
            try:
                async with asyncio.timeout(deadline):
                    result = await attempt(deadline)
                ok = True
                return result
            except ClientError as exc:
                exc.attempts = state.count
                raise
            except Exception as exc:
                failure = classify(exc)
                pause = state.pause_after(failure)
                if pause is None:
                    raise state.error(failure) from None
                await asyncio.sleep(pause)
    finally:
        metrics.observe_call(state.context.model, state.context.protocol, ok, time.monotonic() - state.started)
