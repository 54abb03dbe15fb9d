"""The real Triton serves what the builders publish: predictions equal PyTorch's, raw text in over HTTP and gRPC."""
from __future__ import annotations

import concurrent.futures as futures
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clients.serve import ServerConfig, TritonServer
from common.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(built_repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton") / "server.log"
    config = ServerConfig(repository=built_repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=log, exit_timeout_s=1)
    with TritonServer(config) as running:
        yield running


def _infer_http(url: str, model: str, name: str, array: np.ndarray, datatype: str):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor])
    finally:
        client.close()


def test_digits_served_equals_pytorch_within_tolerance(server, built_repository, digits_run):
    from builders.runners import torch_runner
    from training.export import load_exported

    exported = load_exported(digits_run)
    test = exported.load_splits().test
    images = np.stack([test[i][0].numpy() for i in range(96)])
    expected = torch_runner(exported.model)([images])
    chunks = np.array_split(np.arange(96), 12)  # 12 concurrent requests: the dynamic batcher merges them
    with futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda ix: _infer_http(server.http_url, "digits", "image", images[ix], "FP32"), chunks))
    logits = np.concatenate([r.as_numpy("logits") for r in results])
    probabilities = np.concatenate([r.as_numpy("probabilities") for r in results])
    tolerance = json.loads((built_repository / "digits" / "1" / "lineage.json").read_text())["parity"]["outputs"]
    np.testing.assert_allclose(logits, expected[0], atol=tolerance[0]["atol"], rtol=tolerance[0]["rtol"])
    np.testing.assert_allclose(probabilities, expected[1], atol=tolerance[1]["atol"], rtol=tolerance[1]["rtol"])
    assert results[0].get_response()["model_version"] == "1"


@pytest.fixture(scope="module")
def held_batch_server(built_repository, tmp_path_factory):
    """Triton serving a copy of the built ``textclf`` whose batcher holds requests until ``HELD_BATCH`` are queued.

    With ``preferred_batch_size: [HELD_BATCH]`` and a queue delay far longer than the test, Triton's dynamic batcher
    forms exactly one batch of ``HELD_BATCH`` requests however the client threads happen to be scheduled: the merge
    is guaranteed by the server, not by timing.
    """
    from common.triton_config import config_to_text, load_config_file

    root = tmp_path_factory.mktemp("held")
    repository = root / "model_repository"
    shutil.copytree(built_repository / "textclf", repository / "textclf")
    config = load_config_file(repository / "textclf" / "config.pbtxt")
    config.max_batch_size = max(config.max_batch_size, HELD_BATCH)
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = 120_000_000
    del batching.preferred_batch_size[:]
    batching.preferred_batch_size.append(HELD_BATCH)
    batching.ClearField("default_queue_policy")
    (repository / "textclf" / "config.pbtxt").write_text(config_to_text(config), encoding="utf-8")
    log = root / "server.log"
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=log, exit_timeout_s=1)
    with TritonServer(config) as running:
        yield running


HELD_BATCH = 10  # 8 messages of different lengths + 2 bad requests, sent at once


def _model_statistics(url: str, model: str) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()


def test_textclf_merges_requests_of_different_lengths_and_isolates_a_bad_one(held_batch_server, textclf_run):
    from builders.runners import torch_runner
    from training.export import load_exported

    exported = load_exported(textclf_run)
    test = exported.load_splits().test
    samples = [test[i][0].numpy()[None, :] for i in range(HELD_BATCH - 2)]  # lengths differ from sample to sample
    assert len({s.shape[1] for s in samples}) > 3
    reference = torch_runner(exported.model)
    bad = np.array([[2, 10**6]], dtype=np.int64)  # an id outside the vocabulary
    requests = samples[:4] + [bad] + samples[4:] + [bad]
    assert len(requests) == HELD_BATCH

    def call(array):
        try:
            return _infer_http(held_batch_server.http_url, "textclf", "input_ids", array, "INT64").as_numpy(
                "probabilities")
        except Exception as exc:  # tritonclient raises InferenceServerException
            return exc

    before = _model_statistics(held_batch_server.http_url, "textclf")
    with futures.ThreadPoolExecutor(HELD_BATCH) as pool:  # one thread per request: all of them reach the queue
        outcomes = list(pool.map(call, requests))
    after = _model_statistics(held_batch_server.http_url, "textclf")

    # the server formed one execution out of all ten requests, whatever their lengths (the input is ragged)
    assert int(after["execution_count"]) - int(before["execution_count"]) == 1
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    assert batches.get(HELD_BATCH) == 1, f"executed batch sizes: {batches}"
    # the two bad requests failed alone; the eight good ones got the answers they get unbatched
    good = [(r, o) for r, o in zip(requests, outcomes) if r is not bad]
    for sample, got in good:
        assert isinstance(got, np.ndarray), f"request failed: {got}"
        np.testing.assert_allclose(got, reference([sample])[1], atol=1e-5, rtol=1e-3)
    failures = [o for r, o in zip(requests, outcomes) if r is bad]
    assert all(isinstance(error, Exception) for error in failures), failures


def test_textclf_text_answers_raw_strings_over_http_and_grpc(server, textclf_run):
    import tritonclient.grpc as grpcclient
    from tokenizers import Tokenizer

    from builders.runners import torch_runner
    from training.export import load_exported

    texts = ["I was charged twice for my subscription this month", "the app crashes every time I open settings",
             "how do I reset my password", "please ship my order faster"]
    exported = load_exported(textclf_run)
    tokenizer = Tokenizer.from_file(str(Path(textclf_run) / "tokenizer.json"))
    expected = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        expected.append(torch_runner(exported.model)([ids])[1][0])
    expected = np.stack(expected)
    labels = exported.manifest.labels
    array = np.array([[t] for t in texts], dtype=object)

    http_result = _infer_http(server.http_url, "textclf_text", "text", array, "BYTES")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput("text", list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        grpc_result = client.infer("textclf_text", [tensor], client_timeout=60)
    finally:
        client.close()
    for result in (http_result, grpc_result):
        got_labels = [v.decode() for v in result.as_numpy("label").reshape(-1)]
        assert got_labels == [labels[i] for i in expected.argmax(-1)]
        np.testing.assert_allclose(result.as_numpy("score").reshape(-1), expected.max(-1), atol=1e-5, rtol=1e-3)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5, rtol=1e-3)
