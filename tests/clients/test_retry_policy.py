"""Retry decisions without a server: what is retried, how long pauses are, and that the budget is never exceeded."""
from __future__ import annotations

import random
import socket
import time

import pytest
from tritonclient.utils import InferenceServerException

from clients import metrics
from clients.errors import DeadlineExceeded, InvalidRequest, ModelNotFound, RegionsLost, ServerUnavailable, classify
from clients.retry import Attempts, CallContext, run_sync
from clients.settings import ClientConfig, RetryPolicy, normalize_url
from common.errors import UserError


def triton_error(status: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=status)


@pytest.mark.parametrize("exc, retryable, reason", [
    (triton_error("503", "model unavailable"), True, "http_503"),
    (triton_error("502", "bad gateway"), True, "http_502"),
    (triton_error("504", "gateway timeout"), True, "http_504"),
    (triton_error("StatusCode.UNAVAILABLE", "failed to connect to all addresses; Connection refused"), True,
     "connection_refused"),
    (triton_error("StatusCode.UNAVAILABLE", "model busy"), True, "grpc_unavailable"),
    (triton_error("StatusCode.UNAVAILABLE", "[request id: <id_unknown>] Exceeds maximum queue size"), True, "queue_full"),
    (triton_error("503", "Request timeout expired"), True, "queue_timeout"),
    (triton_error("StatusCode.NOT_FOUND", "Request for unknown model: 'toy' has no available versions"), True,
     "model_unavailable"),
    (ConnectionRefusedError(111, "Connection refused"), True, "connection_refused"),
    (ConnectionResetError(104, "Connection reset by peer"), True, "connection_reset"),
    (RegionsLost("server restarted"), True, "shm_reregister"),
    (triton_error("400", "unexpected shape for input 'x'"), False, "invalid"),
    (triton_error("StatusCode.INVALID_ARGUMENT", "x must be >= 0"), False, "invalid"),
    (triton_error("404", "Request for unknown model: 'nope' is not found"), False, "not_found"),
    (triton_error("StatusCode.NOT_FOUND", "Request for unknown model: 'nope' is not found"), False, "not_found"),
    (triton_error("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"), False, "deadline"),
    (triton_error("500", "model raised"), False, "server_error"),
    (TimeoutError("no answer"), False, "deadline"),
    (socket.gaierror(-2, "Name or service not known"), False, "dns"),
])
def test_classify_retries_only_what_a_retry_can_fix(exc, retryable, reason):
    failure = classify(exc)
    assert (failure.retryable, failure.reason) == (retryable, reason)


def _state(policy: RetryPolicy, seed: int = 0) -> Attempts:
    return Attempts(policy, CallContext("infer", "127.0.0.1:1", "http", "m"), random.Random(seed))


def test_backoff_is_full_jitter_under_an_exponential_bound():
    policy = RetryPolicy(backoff_initial_s=0.1, backoff_multiplier=2.0, backoff_max_s=0.5, budget_s=1000)
    state = _state(policy)
    bounds = []
    for _ in range(6):
        state.next_deadline()
        bounds.append(state.pause_after(classify(ConnectionRefusedError(111, "refused"))))
    for pause, bound in zip(bounds, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]):
        assert 0.0 <= pause <= bound
    # full jitter: pauses are spread over the whole range, not fixed
    samples = []
    for seed in range(200):
        one = _state(policy, seed)
        one.next_deadline()
        samples.append(one.pause_after(classify(ConnectionRefusedError(111, "refused"))))
    assert min(samples) < 0.02 and max(samples) > 0.08


def test_not_retryable_and_max_attempts_stop_at_once():
    state = _state(RetryPolicy(max_attempts=2))
    state.next_deadline()
    assert state.pause_after(classify(triton_error("400", "bad"))) is None
    state = _state(RetryPolicy(max_attempts=2))
    state.next_deadline()
    assert state.pause_after(classify(ConnectionRefusedError(111, "refused"))) is not None
    state.next_deadline()
    assert state.pause_after(classify(ConnectionRefusedError(111, "refused"))) is None


def test_attempt_deadline_never_reaches_past_the_budget():
    state = _state(RetryPolicy(timeout_s=10, budget_s=0.5))
    assert state.next_deadline() <= 0.5
    state.started -= 0.45  # pretend 0.45 s went by
    assert state.next_deadline() <= 0.051


def test_run_sync_retries_until_success_and_counts_retries():
    calls = []

    def attempt(deadline):
        calls.append(deadline)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "ok"

    before = metrics.RETRIES.labels(model="m", protocol="http", reason="connection_refused")._value.get()
    state = _state(RetryPolicy(backoff_initial_s=0.001, backoff_max_s=0.002))
    assert run_sync(attempt, state) == "ok"
    assert state.count == 3 and len(calls) == 3
    after = metrics.RETRIES.labels(model="m", protocol="http", reason="connection_refused")._value.get()
    assert after - before == 2


def test_run_sync_never_retries_invalid_argument():
    calls = []

    def attempt(deadline):
        calls.append(deadline)
        raise triton_error("StatusCode.INVALID_ARGUMENT", "x must be >= 0")

    with pytest.raises(InvalidRequest) as info:
        run_sync(attempt, _state(RetryPolicy()))
    assert len(calls) == 1 and info.value.attempts == 1
    assert "x must be >= 0" in str(info.value)


def test_run_sync_gives_up_within_the_budget_naming_the_url():
    def attempt(deadline):
        raise ConnectionRefusedError(111, "Connection refused")

    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        run_sync(attempt, _state(RetryPolicy(budget_s=0.6, backoff_initial_s=0.05, backoff_max_s=0.2)))
    elapsed = time.monotonic() - started
    assert elapsed <= 0.6 + 0.05
    assert "http://127.0.0.1:1" in str(info.value) and info.value.attempts > 2
    assert isinstance(info.value, UserError)


def test_not_found_and_deadline_errors_are_typed():
    with pytest.raises(ModelNotFound):
        run_sync(lambda d: (_ for _ in ()).throw(triton_error("404", "'x' is not found")), _state(RetryPolicy()))
    with pytest.raises(DeadlineExceeded, match="deadline"):
        run_sync(lambda d: (_ for _ in ()).throw(TimeoutError("slow")), _state(RetryPolicy()))


def test_policy_and_url_validation():
    with pytest.raises(ValueError, match="backoff_max_s"):
        RetryPolicy(backoff_initial_s=1.0, backoff_max_s=0.5)
    assert normalize_url("http://localhost:8000/", "http") == "localhost:8000"
    assert normalize_url("grpc://10.0.0.2:8001", "grpc") == "10.0.0.2:8001"
    for bad in ("localhost", "host:99999", "a b:80"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            normalize_url(bad, "http")
    assert ClientConfig(protocol="grpc").endpoint == "127.0.0.1:8001"
    assert ClientConfig().endpoint == "127.0.0.1:8000"
