"""End to end with what the builders publish: quickly trained digits and textclf runs, built into a repository,
served by the real Triton. Predictions over HTTP, gRPC, sync and asyncio are identical and equal PyTorch's."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from clients import AsyncTritonClient, TritonClient
from clients.serve import TritonServer
from tests.clients.conftest import run_clients_cli, server_config, url_for

pytestmark = pytest.mark.slow

STYLES = [(protocol, style) for protocol in ("http", "grpc") for style in ("sync", "async")]


@pytest.fixture(scope="module")
def runs(lean_runs):
    """The session's digits and textclf runs (tests/conftest.py): trained once for every test package."""
    return lean_runs


@pytest.fixture(scope="module")
def served(lean_repository, tmp_path_factory):
    """Triton on what ``python -m builders build`` published for those runs."""
    root = tmp_path_factory.mktemp("served")
    with TritonServer(server_config(root, repository=lean_repository)) as server:
        yield server


def predict_everywhere(server, model: str, inputs, **settings) -> dict:
    """The same request over HTTP and gRPC, with the blocking and the asyncio client."""
    results = {}
    for protocol, style in STYLES:
        url = url_for(server, protocol)
        if style == "sync":
            with TritonClient(url, protocol, **settings) as client:
                results[(protocol, style)] = client.infer(model, inputs)
        else:
            async def run():
                async with AsyncTritonClient(url, protocol, **settings) as client:
                    return await client.infer(model, inputs)

            results[(protocol, style)] = asyncio.run(run())
    return results


def assert_identical(results: dict) -> None:
    first = next(iter(results.values()))
    for key, result in results.items():
        assert result.labels == first.labels, key
        for name, value in first.outputs.items():
            if value.dtype.kind == "O":  # strings (the ensemble's label)
                np.testing.assert_array_equal(result.outputs[name], value, err_msg=str(key))
            else:
                np.testing.assert_allclose(result.outputs[name], value, rtol=1e-6, atol=1e-7, err_msg=str(key))


def test_digits_predictions_are_identical_everywhere_and_equal_pytorch(runs, served):
    from training.export import load_exported

    exported = load_exported(runs["digits"])
    test = exported.load_splits().test
    images = np.stack([test[i][0].numpy() for i in range(16)]).astype(np.float32)
    with torch.no_grad():
        expected = exported.model(torch.from_numpy(images))[1].numpy()
    results = predict_everywhere(served, "digits", images)
    assert_identical(results)
    for result in results.values():
        assert result.labels == [str(i) for i in expected.argmax(axis=1)]  # digits: class i is "i"
        np.testing.assert_allclose(result.outputs["probabilities"], expected, atol=1e-4, rtol=1e-3)
    shm = predict_everywhere(served, "digits", images, shared_memory="system")
    assert_identical({**results, **{("shm",) + key: value for key, value in shm.items()}})


def _textclf_reference(run_dir, texts):
    from tokenizers import Tokenizer

    from training.export import load_exported

    exported = load_exported(run_dir)
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    ids = np.zeros((len(texts), max(len(e.ids) for e in encodings)), np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
    with torch.no_grad():
        probabilities = exported.model(torch.from_numpy(ids))[1].numpy()
    return probabilities, exported.manifest.labels


def test_textclf_raw_text_is_identical_everywhere_and_equals_pytorch(runs, served):
    from training.corpora import support_tickets

    texts = [example.text for example in support_tickets.generate(12, seed=99)]
    expected, labels = _textclf_reference(runs["textclf"], texts)
    results = predict_everywhere(served, "textclf_text", texts)
    assert_identical(results)
    for result in results.values():
        assert result.labels == [labels[i] for i in expected.argmax(axis=1)]
        np.testing.assert_allclose(result.outputs["probabilities"], expected, atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(result.scores, expected.max(axis=1), atol=1e-4)
    # the token model itself, with the run's tokenizer on the client side: same classes
    with TritonClient(served.grpc_url, "grpc", tokenizer=runs["textclf"] / "tokenizer.json") as client:
        tokens = client.infer("textclf", texts)
    np.testing.assert_array_equal(tokens.class_index, expected.argmax(axis=1))
    assert tokens.labels == [labels[i] for i in expected.argmax(axis=1)], "class names from the config's labels"
    np.testing.assert_allclose(tokens.outputs["probabilities"], expected, atol=1e-4, rtol=1e-3)


def test_the_command_line_on_built_models(runs, served, tmp_path):
    text = "my parcel never arrived and tracking shows nothing"
    expected, labels = _textclf_reference(runs["textclf"], [text])
    result = run_clients_cli("infer", "--model", "textclf_text", "--text", text, "--url", served.http_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["label"] == labels[int(expected.argmax())]
    health = run_clients_cli("health", "--protocol", "grpc", "--url", served.grpc_url, "--model", "digits",
                             "--timeout", "5")
    assert health.returncode == 0 and "model 'digits' ready" in health.stdout
