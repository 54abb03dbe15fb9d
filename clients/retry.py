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
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, TypeVar

from clients import metrics
from clients.errors import (ClientError, DeadlineExceeded, Failure, InvalidRequest, ModelNotFound, ServerError,
                            ServerUnavailable, classify)
from clients.settings import RetryPolicy

T = TypeVar("T")

# Below this much budget another attempt cannot do useful work; stop with the last failure instead.
MIN_ATTEMPT_S = 0.005
# Time kept for a final attempt when a backoff pause would otherwise run into the end of the budget.
LAST_ATTEMPT_S = 0.1


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


_JITTER = random.Random()


@dataclass
class Attempts:
    """Clock, counters and backoff of one call."""

    policy: RetryPolicy
    context: CallContext
    rng: random.Random = _JITTER  # shared: seeding one per call from os.urandom costs more than the rest
    started: float = field(default_factory=time.monotonic)
    count: int = 0  # attempts of the current step
    retries: int = 0  # retries over the whole call, every step included
    last_deadline: float = 0.0

    def step(self, what: str) -> "Attempts":
        """Start the next step of the same call (e.g. metadata, then inference): same clock, budget and backoff."""
        self.context.what = what
        self.count = 0
        return self

    def remaining(self) -> float:
        return self.policy.budget_s - (time.monotonic() - self.started)

    def next_deadline(self) -> float:
        """Deadline of the attempt about to start (call once per attempt).

        Raises DeadlineExceeded when an earlier step of the same call (e.g. reading the model's metadata) already
        used up the budget.
        """
        left = self.remaining()
        if left < MIN_ATTEMPT_S:
            ctx = self.context
            raise DeadlineExceeded(f"{ctx.what}: the {self.policy.budget_s:g} s budget ran out before the request "
                                   f"could be sent to {ctx.target()}")
        self.count += 1
        self.last_deadline = min(self.policy.timeout_s, left)
        return self.last_deadline

    def pause_after(self, failure: Failure) -> float | None:
        """Seconds to wait before the next attempt, or None when the call must stop with ``failure``."""
        if not failure.retryable:
            return None
        if self.policy.max_attempts is not None and self.count >= self.policy.max_attempts:
            return None
        bound = min(self.policy.backoff_max_s,
                    self.policy.backoff_initial_s * self.policy.backoff_multiplier ** self.retries)
        pause = self.rng.uniform(0.0, bound)
        # keep a little time for a last attempt: a server that comes back late in the budget is still found
        reserve = max(MIN_ATTEMPT_S, min(LAST_ATTEMPT_S, 0.1 * self.policy.budget_s))
        pause = min(pause, self.remaining() - reserve)
        if pause < 0:
            return None
        self.retries += 1
        metrics.count_retry(self.context.model, self.context.protocol, failure.reason)
        return pause

    def error(self, failure: Failure) -> ClientError:
        """The exception that ends the call with ``failure`` (its ``attempts`` set)."""
        exc = self._error(failure)
        exc.attempts, exc.retries = self.count, self.retries
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
        about = f" ({ctx.what} for model '{ctx.model}')" if ctx.model else f" ({ctx.what})"
        if failure.retryable:
            limit = f"budget {self.policy.budget_s:g} s"
            if self.policy.max_attempts is not None and self.count >= self.policy.max_attempts:
                limit = f"max_attempts {self.policy.max_attempts}"
            if failure.kind == "unavailable":
                return ServerUnavailable(f"server at {ctx.protocol}://{ctx.url} unavailable{about}: {failure.detail}; "
                                         f"gave up after {tries} ({limit})")
            return ServerError(f"server at {ctx.protocol}://{ctx.url} overloaded{about}: {failure.detail}; gave up "
                               f"after {tries} ({limit})")
        if failure.kind == "unavailable":  # not retryable, e.g. the host name does not resolve
            return ServerUnavailable(f"cannot reach {ctx.protocol}://{ctx.url}{about}: {failure.detail}")
        return ServerError(f"{ctx.what} failed at {ctx.target()}: {failure.detail}")


@contextlib.contextmanager
def observed(state: Attempts) -> Iterator[Attempts]:
    """Record one inference call (all its steps and retries) in the latency histogram, as ok or error.

    Health, metadata and repository calls are not inference: recording them would dilute the p99 the histogram
    exists for, so only calls that start as ``infer`` are observed (their first-call metadata fetch included, since
    the caller waited for it).
    """
    if state.context.what != "infer":
        yield state
        return
    ok = False
    try:
        yield state
        ok = True
    finally:
        metrics.observe_request(state.context.model, state.context.protocol, time.monotonic() - state.started, ok)


def run_sync(attempt: Callable[[float], T], state: Attempts) -> T:
    """Call ``attempt(deadline_s)`` until it succeeds or the policy says stop (retries are counted in metrics).

    Several steps of one call (metadata, then inference) may run with the same ``state``: they share its budget
    and its attempt count.
    """
    while True:
        try:
            return attempt(state.next_deadline())
        except ClientError as exc:
            exc.attempts, exc.retries = state.count, state.retries
            raise
        except Exception as exc:  # every transport error is classified; unknown ones are not retried
            failure = classify(exc)
            pause = state.pause_after(failure)
            if pause is None:
                raise state.error(failure) from None
            time.sleep(pause)


async def run_async(attempt: Callable[[float], Awaitable[T]], state: Attempts) -> T:
    """The asyncio twin of :func:`run_sync`; each attempt is also bounded with ``asyncio.timeout``."""
    while True:
        try:
            deadline = state.next_deadline()
            async with asyncio.timeout(deadline):
                return await attempt(deadline)
        except ClientError as exc:
            exc.attempts, exc.retries = state.count, state.retries
            raise
        except Exception as exc:
            failure = classify(exc)
            pause = state.pause_after(failure)
            if pause is None:
                raise state.error(failure) from None
            await asyncio.sleep(pause)
