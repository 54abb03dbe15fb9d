"""Bring your own model, end to end: an ONNX file from plain ``torch.onnx.export`` with a signature, a factory-string
module with safetensors weights, a fine-tuning run's Hugging Face folder and a sentence-transformers folder are built
through the same gates, served by the real Triton and answer like their source; bad input publishes nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from common.net import free_port
from builders.pipeline import BuildRequest, build
from tests.builders import byom
from tests.builders.conftest import small_settings, tree_state

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["my card was charged twice this month", "the app crashes when i open settings", "where is my parcel",
         "how do i change my email address and my password on the account page please"]


@pytest.fixture(scope="module")
def byom_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    onnx_path, signature, npz = byom.plain_onnx_classifier(root / "onnx")
    factory, weights, reg_signature = byom.factory_regressor(root / "factory")
    run = byom.finetune_run(root / "run", byom.tiny_bert_dir(root / "tinysent", "classification"))
    emb = byom.tiny_bert_dir(root / "tinyemb", "embedding", pooling="cls", seed=1)
    labelled = root / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS * 4)))
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"text": t, "pair": t.upper()}) + "\n" for t in TEXTS))
    repository = root / "model_repository"
    settings = small_settings(root / "builds", tensorrt={"mode": "off"})
    requests = {
        "classifier": BuildRequest(onnx=onnx_path, signature=signature, heldout=npz, name="classifier"),
        "tiny_regressor": BuildRequest(factory=factory, weights=weights, signature=reg_signature),
        "tinysent": BuildRequest(run_dir=run, heldout=labelled),
        "tinyemb": BuildRequest(hf_dir=emb, task="embedding", heldout=pairs),
    }
    reports = {}
    for name, request in requests.items():
        request.repository, request.settings, request.quiet = repository, settings, True
        reports[name] = build(request)
    return {"root": root, "repository": repository, "reports": reports, "onnx": onnx_path, "npz": npz,
            "factory": (factory, weights, reg_signature), "run": run, "emb": emb, "signature": signature}


@pytest.fixture(scope="module")
def byom_server(byom_models, tmp_path_factory):
    from clients.serve import ServerConfig, TritonServer

    config = ServerConfig(repository=byom_models["repository"], http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=tmp_path_factory.mktemp("triton") / "server.log",
                          exit_timeout_s=1)
    with TritonServer(config) as running:
        yield running


def test_each_source_is_built_gated_and_published_with_what_its_task_measures(byom_models):
    reports = byom_models["reports"]
    onnx = reports["classifier"]
    assert onnx["source"] == "onnx" and onnx["published"]["version"] == 1
    assert onnx["parity"]["reference"].endswith("(as given)") and onnx["parity"]["passed"]
    assert onnx["accuracy"] == pytest.approx(86 / 96, abs=1e-6) and onnx["gate"]["metric"] == "accuracy"
    generic = reports["tiny_regressor"]
    assert generic["task"] == "generic" and generic["parity"]["task"] == "generic" and generic["accuracy"] is None
    assert generic["accuracy_gating"].startswith("accuracy gating is off")
    assert generic["gate"]["passed"] and generic["package"]["members"] == ["tiny_regressor"]
    sent = reports["tinysent"]
    assert sent["checkpoint"]["kind"] == "training-run+hf" and sent["quality"]["name"] == "accuracy"
    assert sent["package"]["members"] == ["tinysent_tokenizer", "tinysent_labels", "tinysent", "tinysent_text"]
    emb = reports["tinyemb"]
    assert emb["quality"]["name"] == "recall_at_1" and emb["parity"]["min_cosine"] >= 0.9999
    assert emb["package"]["members"] == ["tinyemb_tokenizer", "tinyemb", "tinyemb_text"]
    lineage = json.loads((byom_models["repository"] / "tinyemb" / "1" / "lineage.json").read_text())
    assert lineage["task"] == "embedding" and lineage["source"] == "hf"


def _http(url, model, inputs, outputs):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        tensors = []
        for name, array, datatype in inputs:
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return [result.as_numpy(name) for name in outputs]
    finally:
        client.close()


def _grpc(url, model, inputs, outputs):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        tensors = []
        for name, array, datatype in inputs:
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(model, tensors, client_timeout=60)
        return [result.as_numpy(name) for name in outputs]
    finally:
        client.close()


def _texts(texts):
    return np.array([[t.encode()] for t in texts], dtype=object)


def test_served_models_answer_like_their_sources(byom_models, byom_server):
    import onnxruntime as ort
    import torch

    from builders.sources import SourceSpec, open_source

    x = np.load(byom_models["npz"])["x"][:10]
    given = ort.InferenceSession(str(byom_models["onnx"]), providers=["CPUExecutionProvider"])
    [probabilities] = _http(byom_server.http_url, "classifier", [("x", x, "FP32")], ["probabilities"])
    np.testing.assert_allclose(probabilities, given.run(["probabilities"], {"x": x})[0], atol=1e-5)

    factory, weights, signature = byom_models["factory"]
    module = open_source(SourceSpec(factory=factory, weights=weights, signature=signature)).module()
    features = np.random.default_rng(3).standard_normal((7, 6)).astype(np.float32)
    mean, scale = _grpc(byom_server.grpc_url, "tiny_regressor", [("features", features, "FP32")], ["mean", "scale"])
    with torch.inference_mode():
        want = module(torch.from_numpy(features))
    np.testing.assert_allclose(mean, want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(scale, want[1].numpy(), atol=1e-5)

    sent = open_source(SourceSpec(run_dir=byom_models["run"]))
    emb = open_source(SourceSpec(hf_dir=byom_models["emb"], task="embedding"))
    from builders.sources.heldout import encode_texts

    answers = {}
    for source, model, output, index in ((sent, "tinysent_text", "probabilities", 1),
                                         (emb, "tinyemb_text", "embedding", 0)):
        with torch.inference_mode():
            expected = np.stack([source.module()(*(torch.from_numpy(a[None]) for a in row))[index][0].numpy()
                                 for row in encode_texts(source.signature, TEXTS)])  # one text at a time: no padding
        for call, url in ((_http, byom_server.http_url), (_grpc, byom_server.grpc_url)):
            [served] = call(url, model, [("text", _texts(TEXTS), "BYTES")], [output])  # batched: padded, masked
            np.testing.assert_allclose(served, expected, atol=2e-5)
        answers[model] = expected
    [labels] = _http(byom_server.http_url, "tinysent_text", [("text", _texts(TEXTS), "BYTES")], ["label"])
    assert [label[0].decode() for label in labels] == [sent.labels[i] for i in answers["tinysent_text"].argmax(-1)]


def _bad_inputs(models, tmp_path):
    """(request, expected text in the one-line error) for every kind of bad input, each against a real file."""
    import shutil

    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "fine", "pair": "good"}\n{"text": "broken", "pair": }\n')
    missing = tmp_path / "missing_tok"
    shutil.copytree(models["emb"], missing)
    (missing / "tokenizer.json").unlink()
    future = tmp_path / "future"
    shutil.copytree(models["emb"], future)
    config = json.loads((future / "config.json").read_text())
    config["model_type"] = "bert-from-the-future"
    (future / "config.json").write_text(json.dumps(config))
    small_vocab = byom.tiny_bert_dir(tmp_path / "small_vocab", "embedding", vocab_size=500)
    wrong_signature = tmp_path / "wrong.toml"
    wrong_signature.write_text(models["signature"].read_text().replace('name = "x"', 'name = "pixels"'))
    factory, weights, signature = models["factory"]
    return [
        (BuildRequest(hf_dir=models["emb"], task="embedding", heldout=bad_jsonl), f"{bad_jsonl}:2: not valid JSON"),
        (BuildRequest(hf_dir=missing, task="embedding"), f"{missing / 'tokenizer.json'} is missing"),
        (BuildRequest(hf_dir=future, task="embedding"), "cannot load this model offline"),
        (BuildRequest(hf_dir=small_vocab, task="embedding"), "the tokenizer has 30522 tokens but config.json field "
                                                             "'vocab_size' is 500"),
        (BuildRequest(onnx=models["onnx"], signature=wrong_signature), "graph inputs are ['x'] but"),
        (BuildRequest(factory="tests.builders.nowhere:make", weights=weights, signature=signature),
         "module 'tests.builders.nowhere' does not import"),
    ]


def test_every_bad_input_stops_with_one_line_and_publishes_nothing(byom_models, tmp_path):
    repository = byom_models["repository"]
    before = tree_state(repository)
    for request, expected in _bad_inputs(byom_models, tmp_path):
        request.repository, request.quiet = repository, True
        request.settings, request.name = small_settings(tmp_path / "builds", tensorrt={"mode": "off"}), "tinyemb"
        with pytest.raises(UserError) as info:
            build(request)
        message = str(info.value)
        assert expected in message and "\n" not in message, message
    assert tree_state(repository) == before


def test_the_command_line_says_what_is_wrong_in_one_line(byom_models, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "pair": "b"}\n{"text": "c"}\n')
    repository = tmp_path / "repo"
    result = subprocess.run([sys.executable, "-m", "builders", "build", "--hf-dir", str(byom_models["emb"]),
                             "--task", "embedding", "--heldout", str(bad), "--repository", str(repository),
                             "--work-dir", str(tmp_path / "builds"), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {bad}:2: this line is a text example but earlier lines are pairs; expected every line to have the "
        "same fields [step 'load' failed;"), result.stderr
    assert "Traceback" not in result.stderr and not repository.exists()
