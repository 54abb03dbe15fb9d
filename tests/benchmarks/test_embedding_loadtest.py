"""Load tests of embedding models: ``python -m benchmarks loadtest`` recognises a model that returns an embedding and
runs the Locust user that checks every answer is a finite unit vector of the right size, over HTTP and gRPC, against
the real Triton serving the client tests' embedding fixtures (``embed_text`` is correct, ``embed_unnormalised``
returns vectors of norm 2)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients.embeddings import vector_problem
from clients.serve import TritonServer
from tests.clients.conftest import server_config
from tests.clients.test_embed import EMBEDDING_REPOSITORY

ROOT = Path(__file__).resolve().parents[2]


def test_vector_problem_names_shape_values_and_norm():
    unit = np.eye(1, 384, dtype=np.float32)
    assert vector_problem(unit, 384, 1) is None
    assert vector_problem(unit[:, :383], 384, 1) == "embedding shape [1, 383], expected [1, 384]"
    assert vector_problem(np.full((1, 384), np.nan, np.float32), 384, 1) == "embedding has NaN or infinite values"
    assert vector_problem(2 * unit, 384, 1) == "embedding norm 2.0000..2.0000, expected 1 (L2-normalised)"
    assert vector_problem(np.zeros((1, 384)), 384, 1).startswith("embedding norm 0.0000")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with TritonServer(server_config(tmp_path_factory.mktemp("embed-load"), repository=EMBEDDING_REPOSITORY)) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_embedding_answers_are_checked_by_the_locust_user(served, tmp_path, protocol):
    def run(model: str) -> dict:
        command = [sys.executable, "-m", "benchmarks", "loadtest", "--http-port", str(served.config.http_port),
                   "--grpc-port", str(served.config.grpc_port), "--results-dir", str(tmp_path), "--model", model,
                   "--protocol", protocol, "--users", "2", "--duration", "4", "--payloads", "16", "--name", model]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((tmp_path / f"{model}.json").read_text())

    good = run("embed_text")
    assert good["settings"]["embedding_output"] == "embedding" and good["settings"]["embedding_dims"] == 384
    assert good["result"]["requests"] > 0 and good["result"]["errors"] == 0
    bad = run("embed_unnormalised")
    assert bad["result"]["requests"] > 0 and bad["result"]["errors"] == bad["result"]["requests"]
    assert "embedding norm 2.0000..2.0000, expected 1" in bad["result"]["error_kinds"][0]["error"]


def test_embedding_payloads_are_the_benchmark_sentences_as_text_or_minilm_tokens():
    from benchmarks.payloads import InputSpec, make_payloads
    from benchmarks.sentences import benchmark_sentences, token_counts

    sentences = benchmark_sentences(6)
    texts = make_payloads("minilm_text", [InputSpec("text", "BYTES", (1,))], 6)
    assert [p["text"].shape for p in texts] == [(1, 1)] * 6
    assert [p["text"][0, 0].decode() for p in texts] == sentences
    names = ("input_ids", "attention_mask", "token_type_ids")
    tokens = make_payloads("minilm", [InputSpec(n, "INT64", (-1,)) for n in names], 6)
    for payload, count in zip(tokens, token_counts(sentences)):
        assert set(payload) == set(names) and payload["input_ids"].dtype == np.int64
        assert payload["input_ids"].shape == payload["attention_mask"].shape == (1, count)
        assert payload["attention_mask"].sum() == count and payload["input_ids"][0, 0] == 101  # [CLS]
