"""The real all-MiniLM-L6-v2, built by the builders and served by the real Triton, through the client's ``embed``
(library: HTTP and gRPC, sync and asyncio; raw text to ``minilm_text`` and pre-tokenized to ``minilm``) and through
``python -m clients embed``: the vectors are sentence-transformers' own (cosine >= 0.9999), long sentences included.

The build and the server are the builders' session fixtures (tests/builders/test_minilm.py), so the model is built
once per test session."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tests.builders.test_minilm import minilm_build, minilm_dir, minilm_server  # noqa: F401  (fixtures)
from tests.clients.conftest import run_clients_cli, url_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    from benchmarks.sentences import benchmark_sentences, token_counts

    texts = benchmark_sentences(24)
    assert max(token_counts(texts, limit=10_000)) > 128  # long ones too (more than tokenizer.json's own 128)
    return texts + ["a sentence far beyond the model's 256 tokens " * 40]


@pytest.fixture(scope="module")
def reference(sentences) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    return model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)


def assert_same_vectors(got: np.ndarray, reference: np.ndarray) -> None:
    assert got.shape == reference.shape == (len(reference), 384)
    cosine = (got * reference).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.9999, cosine.min()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_library_embed_equals_sentence_transformers_every_way(minilm_build, minilm_server, sentences,  # noqa: F811
                                                              reference):
    from clients import AsyncTritonClient, TritonClient

    repository, _ = minilm_build
    # the model folder's tokenizer (its sentence_bert_config.json says 256), and the published one (whose own
    # tokenizer.json says 128; the served tokenizer step's max_length parameter says 256)
    tokenizers = {"http": minilm_dir() / "tokenizer.json",
                  "grpc": repository / "minilm_tokenizer" / "1" / "tokenizer.json"}
    for protocol in ("http", "grpc"):
        url = url_for(minilm_server, protocol)
        tokenizer = tokenizers[protocol]
        with TritonClient(url, protocol, retry={"timeout_s": 60, "budget_s": 120}) as client:
            assert_same_vectors(client.embed("minilm_text", sentences).embeddings, reference)
        with TritonClient(url, protocol, tokenizer=tokenizer, retry={"timeout_s": 60, "budget_s": 120}) as client:
            assert_same_vectors(client.embed("minilm", sentences, batch_size=8).embeddings, reference)

        async def run():
            async with AsyncTritonClient(url, protocol, retry={"timeout_s": 60, "budget_s": 120}) as client:
                return await client.embed("minilm_text", sentences, batch_size=5)

        result = asyncio.run(run())
        assert result.extra["requests"] == 5
        assert_same_vectors(result.embeddings, reference)


def test_embed_command_returns_sentence_transformers_vectors(minilm_server, sentences, reference, tmp_path):  # noqa: F811
    for protocol in ("http", "grpc"):
        out = tmp_path / f"{protocol}.npy"
        done = run_clients_cli("embed", "--model", "minilm_text", *[a for s in sentences[:3] for a in ("--text", s)],
                               "--protocol", protocol, "--url", url_for(minilm_server, protocol), "--output", str(out),
                               "--timeout", "60", timeout=180)
        assert done.returncode == 0, done.stderr
        assert_same_vectors(np.load(out), reference[:3])
    done = run_clients_cli("embed", "--model", "minilm_text", "--text", sentences[0], "--json", "--url",
                           minilm_server.http_url, "--timeout", "60", timeout=180)
    assert done.returncode == 0, done.stderr
    assert_same_vectors(np.asarray(json.loads(done.stdout)["embeddings"], dtype=np.float32), reference[:1])
