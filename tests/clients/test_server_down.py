"""A server that is down: calls retry inside their budget, fail naming the URL, and succeed when it comes back."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from clients import AsyncTritonClient, TritonClient
from clients.errors import ServerUnavailable
from clients.serve import TritonServer
from common.net import free_port
from tests.clients.conftest import server_config

FEATURES = np.ones((2, 4), np.float32)
BUDGET_S = 5.0
# fast backoff so a 5 s budget sees many attempts; the default (50 ms .. 2 s) behaves the same, only slower
RETRY = {"budget_s": BUDGET_S, "timeout_s": 2.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.5}
# Triton takes 1 s to start here when the machine is quiet and over 3 s when it is busy: the restart test gives the
# server 2 s of downtime plus its start-up, inside a budget that leaves room for a busy machine.
RESTART_BUDGET_S = 10.0
RESTART_RETRY = {**RETRY, "budget_s": RESTART_BUDGET_S}


def _timed(call):
    """(result or the exception raised, seconds the call itself took)."""
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:  # the outcome under test
        return exc, time.monotonic() - started


def _sync_call(url: str, protocol: str, retry: dict = RETRY):
    with TritonClient(url, protocol, retry=retry) as client:
        return _timed(lambda: client.infer("toy", FEATURES))


def _async_call(url: str, protocol: str, retry: dict = RETRY):
    async def run():
        async with AsyncTritonClient(url, protocol, retry=retry) as client:
            started = time.monotonic()
            try:
                return await client.infer("toy", FEATURES), time.monotonic() - started
            except Exception as exc:  # the outcome under test
                return exc, time.monotonic() - started

    return asyncio.run(run())


def _concurrently(calls: dict[str, tuple]) -> dict[str, tuple[object, float]]:
    """Run each (function, args...) in its own thread; collect what each returns: (outcome, seconds)."""
    outcomes = {}
    threads = [threading.Thread(target=lambda n=name, f=spec[0], a=spec[1:]: outcomes.__setitem__(n, f(*a)))
               for name, spec in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.slow
def test_with_the_server_stopped_a_call_fails_within_its_budget_naming_the_url():
    http_url, grpc_url = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"  # nothing listens there
    outcomes = _concurrently({
        "http-sync": (_sync_call, http_url, "http"), "grpc-sync": (_sync_call, grpc_url, "grpc"),
        "http-async": (_async_call, http_url, "http"), "grpc-async": (_async_call, grpc_url, "grpc"),
    })
    for name, (error, seconds) in outcomes.items():
        protocol = name.split("-")[0]
        url = http_url if protocol == "http" else grpc_url
        assert isinstance(error, ServerUnavailable), (name, error)
        assert f"{protocol}://{url}" in str(error) and "budget 5 s" in str(error), str(error)
        assert error.attempts >= 5 and error.retries == error.attempts - 1, (name, error.attempts)
        assert BUDGET_S - 1.0 <= seconds <= BUDGET_S + 0.1, (name, seconds)  # used the budget, never more


@pytest.mark.slow
def test_a_server_restarted_within_the_budget_makes_the_call_succeed(tmp_path):
    config = server_config(tmp_path, free_port(), free_port())
    http_url, grpc_url = f"127.0.0.1:{config.http_port}", f"127.0.0.1:{config.grpc_port}"
    first = TritonServer(config).start()
    second = TritonServer(config.model_copy(update={"log_file": tmp_path / "restarted.log"}))
    shm_client = TritonClient(grpc_url, "grpc", shared_memory="system", retry=RESTART_RETRY)
    outcomes: dict[str, tuple[object, float]] = {}
    calls = {"http-sync": (_sync_call, http_url, "http", RESTART_RETRY),
             "grpc-async": (_async_call, grpc_url, "grpc", RESTART_RETRY),
             "grpc-shm": (_timed, lambda: shm_client.infer("toy", FEATURES))}
    callers = [threading.Thread(target=lambda n=name, f=spec[0], a=spec[1:]: outcomes.__setitem__(n, f(*a)))
               for name, spec in calls.items()]
    try:
        # a client that worked before: its shared-memory regions are registered with the first server only
        reference = shm_client.infer("toy", FEATURES).outputs["probabilities"]
        first.stop()
        for caller in callers:
            caller.start()
        time.sleep(2.0)
        # the same ports come back (started from this thread: Triton is tied to the thread that starts it)
        restarted = time.monotonic()
        second.start()
        startup_s = time.monotonic() - restarted
        for caller in callers:
            caller.join()
    finally:
        shm_client.close()
        first.stop()
        second.stop()
    for name, (result, seconds) in outcomes.items():
        assert not isinstance(result, Exception), (name, result)
        assert result.retries > 0 and seconds < RESTART_BUDGET_S, (name, result.retries, seconds, startup_s)
        np.testing.assert_allclose(result.outputs["probabilities"], reference, rtol=1e-6)
