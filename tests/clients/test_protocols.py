"""The client library against the real Triton (fixture models): identical answers over HTTP, gRPC, sync, asyncio
and shared memory; bad input refused with its reason; retries only where they help; deadlines kept."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from clients import AsyncTritonClient, TritonClient, metrics
from clients.errors import DeadlineExceeded, InvalidRequest, ModelNotFound
from tests.clients.conftest import FIXTURE_REPOSITORY, url_for



def toy_reference(features: np.ndarray) -> np.ndarray:
    """The toy model's probabilities computed with numpy from the weights file the model itself loads."""
    params = json.loads((FIXTURE_REPOSITORY / "toy" / "1" / "weights.json").read_text())
    logits = features @ np.array(params["weights"], np.float32) + np.array(params["bias"], np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def call(style: str, protocol: str, url: str, method: str, *args, **settings):
    """Run one client method with a fresh sync or asyncio client."""
    if style == "sync":
        with TritonClient(url, protocol, **settings) as client:
            return getattr(client, method)(*args)

    async def run():
        async with AsyncTritonClient(url, protocol, **settings) as client:
            return await getattr(client, method)(*args)

    return asyncio.run(run())


FEATURES = np.random.default_rng(7).normal(size=(6, 4)).astype(np.float32)
TEXTS = ["where is my parcel?", "refund me", "is this thing on?"]


def test_every_protocol_style_and_fast_path_gives_identical_predictions(triton):
    expected = toy_reference(FEATURES)
    seen = {}
    for protocol in ("http", "grpc"):
        for style in ("sync", "async"):
            for shm in ("none", "system"):
                url = url_for(triton, protocol)
                toy = call(style, protocol, url, "infer", "toy", FEATURES, shared_memory=shm)
                text = call(style, protocol, url, "infer", "text", TEXTS, shared_memory=shm)
                seen[(protocol, style, shm)] = (toy, text)
                np.testing.assert_allclose(toy.outputs["probabilities"], expected, rtol=1e-5, atol=1e-6)
                assert toy.labels == [["cat", "dog", "bird"][i] for i in expected.argmax(axis=1)]
                assert text.labels == ["question", "statement", "question"]
    first_toy, first_text = next(iter(seen.values()))
    for toy, text in seen.values():
        np.testing.assert_array_equal(toy.outputs["logits"], first_toy.outputs["logits"])
        np.testing.assert_array_equal(toy.outputs["probabilities"], first_toy.outputs["probabilities"])
        assert toy.labels == first_toy.labels and text.labels == first_text.labels
        np.testing.assert_array_equal(text.scores, first_text.scores)


@pytest.mark.parametrize("style", ["sync", "async"])
def test_shared_memory_regions_are_reused_and_released(triton, protocol, style):
    url = url_for(triton, protocol)
    with TritonClient(url, protocol) as observer:
        def registered():
            status = observer._transport._call(2.0, "get_system_shared_memory_status", **observer._transport._admin)
            return len(status) if isinstance(status, list) else len(status.regions)

        before = registered()
        if style == "sync":
            with TritonClient(url, protocol, shared_memory="system") as client:
                for rows in (2, 2, 8, 3):  # the 8-row call outgrows the regions once
                    result = client.infer("toy", FEATURES[:rows] if rows <= 6 else np.tile(FEATURES, (2, 1))[:rows])
                    assert result.outputs["probabilities"].shape == (rows, 3)
                during = registered()
        else:
            async def run():
                async with AsyncTritonClient(url, protocol, shared_memory="system") as client:
                    results = await asyncio.gather(*(client.infer("toy", FEATURES) for _ in range(4)))
                    assert all(r.outputs["probabilities"].shape == (6, 3) for r in results)
                    return registered()

            during = asyncio.run(run())
        assert during > before  # regions were registered while the client was open...
        assert registered() == before  # ...and unregistered when it closed


def test_one_sync_client_is_safe_to_share_between_threads(triton, protocol):
    expected = toy_reference(FEATURES)
    errors = []
    with TritonClient(url_for(triton, protocol), protocol) as client:
        def worker():
            try:
                for _ in range(10):
                    np.testing.assert_allclose(client.infer("toy", FEATURES).outputs["probabilities"], expected,
                                               rtol=1e-5, atol=1e-6)
            except Exception as exc:  # collected and re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors


@pytest.mark.parametrize("style", ["sync", "async"])
def test_bad_input_is_refused_naming_what_was_sent_and_expected(triton, protocol, style):
    url = url_for(triton, protocol)
    cases = [
        (("nope", FEATURES), ModelNotFound, f"unknown model 'nope' at {protocol}://{url}; it serves: guard, slow, text, toy"),
        (("toy", FEATURES, "7"), ModelNotFound, "model 'toy' has no version 7"),
        (("toy", {"feature": FEATURES}), InvalidRequest, "has no input named 'feature' (sent feature FP32 [6, 4]); it expects: features FP32 [batch<=8, 4]"),
        (("toy", FEATURES[:, :3]), InvalidRequest, "input 'features' has shape [6, 3] but the model expects [batch<=8, 4]"),
        (("toy", FEATURES.astype(np.float64)), InvalidRequest, "has datatype FP64 but the model expects FP32"),
        (("toy", np.zeros((9, 4), np.float32)), InvalidRequest, "batch of 9 rows in input 'features' is above the model's max_batch_size 8"),
        (("toy", np.zeros((0, 4), np.float32)), InvalidRequest, "empty request"),
        (("text", []), InvalidRequest, "empty request"),
    ]
    for args, error, message in cases:
        with pytest.raises(error) as info:
            call(style, protocol, url, "infer", *args)
        assert message in str(info.value), str(info.value)


def _inference_count(client: TritonClient, model: str) -> int:
    stats = client._transport._call(2.0, "get_inference_statistics", model)
    if isinstance(stats, dict):
        return int(stats["model_stats"][0]["inference_count"])
    return int(stats.model_stats[0].inference_count)


def _settled_inference_count(client: TritonClient, model: str, above: int) -> int:
    """Triton updates statistics just after answering: wait for the count to move, then a little more."""
    deadline = time.monotonic() + 3.0
    while _inference_count(client, model) <= above and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return _inference_count(client, model)


def test_invalid_argument_from_the_server_is_never_retried(triton, protocol):
    url = url_for(triton, protocol)
    with TritonClient(url, protocol) as client:
        before = _inference_count(client, "guard")
        with pytest.raises(InvalidRequest, match="x must be >= 0") as info:
            client.infer("guard", np.array([-1.0], np.float32))
        assert info.value.attempts == 1
        assert _settled_inference_count(client, "guard", before) - before == 1  # the server saw exactly one
    # also when client-side checks are off and Triton itself rejects the shape
    with TritonClient(url, protocol, validate_inputs=False) as client:
        with pytest.raises(InvalidRequest, match="unexpected shape") as info:
            client.infer("toy", FEATURES[:, :3])
        assert info.value.attempts == 1


@pytest.mark.parametrize("style", ["sync", "async"])
def test_unavailable_from_the_model_is_retried_until_it_succeeds(triton, protocol, style):
    # the guard model answers UNAVAILABLE the first (x % 10) times it sees x
    value = {"http": 1003.0, "grpc": 2003.0}[protocol] + (100.0 if style == "async" else 0.0)
    reason = "http_503" if protocol == "http" else "grpc_unavailable"
    counter = metrics.RETRIES.labels(model="guard", protocol=protocol, reason=reason)
    before = counter._value.get()
    result = call(style, protocol, url_for(triton, protocol), "infer", "guard", np.array([value], np.float32),
                  retry={"backoff_initial_s": 0.01, "backoff_max_s": 0.05})
    assert result.attempts == 4 and result.outputs["y"][0] == value
    assert counter._value.get() - before == 3


def test_a_full_server_queue_is_retried(triton, protocol):
    """slow has a one-request queue: with one request running and one queued, a third is rejected and retried."""
    url = url_for(triton, protocol)
    counter = metrics.RETRIES.labels(model="slow", protocol=protocol, reason="queue_full")
    before = counter._value.get()
    threads = [threading.Thread(target=call, args=("sync", protocol, url, "infer", "slow", np.array([[0.8]], np.float32)))
               for _ in range(2)]
    with TritonClient(url, protocol, retry={"backoff_initial_s": 0.05, "backoff_max_s": 0.2}) as client:
        client.model_info("slow")
        for thread in threads:
            thread.start()
            time.sleep(0.25)
        result = client.infer("slow", np.array([[0.01]], np.float32))
    for thread in threads:
        thread.join()
    assert result.attempts > 1 and counter._value.get() - before >= 1


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_slow_answer_ends_at_the_deadline_and_is_not_retried(triton, protocol, style):
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="within the 0.3 s deadline") as info:
        call(style, protocol, url_for(triton, protocol), "infer", "slow", np.array([[1.5]], np.float32),
             retry={"timeout_s": 0.3, "budget_s": 5.0})
    assert time.monotonic() - started < 1.5
    assert info.value.attempts == 1
    time.sleep(1.3)  # let the server finish the abandoned request before the next test uses slow


@pytest.mark.parametrize("style", ["sync", "async"])
def test_an_abandoned_grpc_inference_is_left_to_the_server_not_cancelled(triton, style, monkeypatch):
    """Cancellations racing completions crash Triton 2.51's gRPC frontend under overload (server#7368): the caller
    stops waiting at its deadline, while the RPC's own gRPC deadline is a grace period later and the server, told the
    caller's deadline, answers first."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpc_aio

    from clients.transports.adapters import GRPC_INFER_GRACE_S

    seen = []
    for module, name in ((grpcclient.InferenceServerClient, "async_infer"), (grpc_aio.InferenceServerClient, "infer")):
        original = getattr(module, name)

        def recording(self, *args, _original=original, **kwargs):
            seen.append(kwargs.get("client_timeout"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(module, name, recording)
    before = _inference_count_of(triton, "slow")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="within the 0.3 s deadline"):
        call(style, "grpc", triton.grpc_url, "infer", "slow", np.array([[1.0]], np.float32),
             retry={"timeout_s": 0.3, "budget_s": 5.0})
    assert time.monotonic() - started < 1.0  # the caller got its answer at its deadline
    assert len(seen) == 1 and seen[0] > 0.3 + GRPC_INFER_GRACE_S - 0.1  # gRPC's deadline: after the grace
    deadline = time.monotonic() + 5
    while _inference_count_of(triton, "slow") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _inference_count_of(triton, "slow") == before + 1  # the server ran it to the end


def _inference_count_of(triton, model: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{triton.http_url}/v2/models/{model}/stats", timeout=5) as response:
        stats = json.loads(response.read())["model_stats"]
    return sum(int(s["inference_count"]) for s in stats)


def test_health_checks(triton, protocol):
    with TritonClient(url_for(triton, protocol), protocol) as client:
        assert client.live() and client.ready() and client.model_ready("toy")
        assert not client.model_ready("nope")
        assert client.wait_until_ready(5, model="text") < 5
        assert client.server_version().startswith("triton 2.")
        names = {m["name"] for m in client.models()}
        assert names == {"guard", "slow", "text", "toy"}


def test_latency_is_recorded_per_inference_call_only(triton, protocol):
    histogram = metrics.REQUEST_DURATION.labels(model="toy", protocol=protocol, outcome="ok")

    def observed() -> float:
        return next(s.value for s in histogram._child_samples() if s.name == "_count")

    before = observed()
    with TritonClient(url_for(triton, protocol), protocol) as client:
        client.infer("toy", FEATURES)
        client.infer("toy", FEATURES)
        assert client.model_ready("toy") and client.model_info("toy").name == "toy"  # not inference: not observed
    assert observed() - before == 2
    errors = metrics.REQUEST_DURATION.labels(model="guard", protocol=protocol, outcome="error")
    before_errors = next(s.value for s in errors._child_samples() if s.name == "_count")
    with TritonClient(url_for(triton, protocol), protocol) as client, pytest.raises(InvalidRequest):
        client.infer("guard", np.array([-5.0], np.float32))
    assert next(s.value for s in errors._child_samples() if s.name == "_count") - before_errors == 1


@pytest.mark.gpu
def test_cuda_shared_memory_gives_the_same_answer(triton, protocol):
    expected = toy_reference(FEATURES)
    with TritonClient(url_for(triton, protocol), protocol, shared_memory="cuda") as client:
        result = client.infer("toy", FEATURES)
    np.testing.assert_allclose(result.outputs["probabilities"], expected, rtol=1e-5, atol=1e-6)


def test_cuda_shared_memory_without_a_gpu_is_a_clear_error():
    import torch

    from clients.shm import ShmUnavailable

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: test_cuda_shared_memory_gives_the_same_answer covers it")
    with pytest.raises(ShmUnavailable, match="CUDA shared memory is not available on this host"):
        TritonClient("127.0.0.1:1", "grpc", shared_memory="cuda")
