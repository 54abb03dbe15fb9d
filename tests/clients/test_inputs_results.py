"""Input checking and result building against hand-made model descriptions (no server needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clients.errors import InvalidRequest
from clients.inputs import Tokenizer, prepare
from clients.model_info import ModelInfo, TensorInfo, config_from_json, metadata_from_json, build_model_info
from clients.results import interpret

IMAGE = ModelInfo(name="digits", version="", versions=("1",), platform="python", max_batch_size=8,
                  inputs=(TensorInfo("image", "FP32", (-1, 1, 8, 8)),),
                  outputs=(TensorInfo("logits", "FP32", (-1, 10)), TensorInfo("probabilities", "FP32", (-1, 10))),
                  labels=None, dynamic_batching=True)
TEXT = ModelInfo(name="textclf_text", version="", versions=("1",), platform="ensemble", max_batch_size=8,
                 inputs=(TensorInfo("text", "BYTES", (-1, 1)),),
                 outputs=(TensorInfo("label", "BYTES", (-1, 1)), TensorInfo("score", "FP32", (-1, 1))),
                 labels=None, dynamic_batching=False)
TOKENS = ModelInfo(name="textclf", version="", versions=("1",), platform="python", max_batch_size=8,
                   inputs=(TensorInfo("input_ids", "INT64", (-1, -1)),),
                   outputs=(TensorInfo("logits", "FP32", (-1, 4)),),
                   labels=("billing", "delivery", "account", "other"), dynamic_batching=True)


def images(n: int, dtype=np.float32) -> np.ndarray:
    return np.zeros((n, 1, 8, 8), dtype=dtype)


def test_a_good_array_passes_with_its_batch_size():
    arrays, batch = prepare(IMAGE, images(3))
    assert batch == 3 and arrays["image"].shape == (3, 1, 8, 8)


@pytest.mark.parametrize("inputs, message", [
    (images(2, np.float64), "input 'image' has datatype FP64 but the model expects FP32 (sent image FP64 [2, 1, 8, 8]"),
    (np.zeros((2, 8, 8), np.float32), "has shape [2, 8, 8] but the model expects [batch<=8, 1, 8, 8]"),
    (np.zeros((2, 1, 8, 7), np.float32), "has shape [2, 1, 8, 7]"),
    ({"img": images(1)}, "has no input named 'img' (sent img FP32 [1, 1, 8, 8]); it expects: image FP32 [batch<=8, 1, 8, 8]"),
    (images(9), "batch of 9 rows in input 'image' is above the model's max_batch_size 8"),
    (images(0), "empty request: input 'image' of model 'digits' holds no values"),
    ({}, "empty request: no inputs for model 'digits'"),
    (None, "empty request: nothing to send to model 'digits'"),
    ([], "empty request: no rows for model 'digits'"),
    ("hello", "model 'digits' does not take text; it expects: image FP32"),
])
def test_bad_inputs_name_what_was_sent_and_what_is_expected(inputs, message):
    with pytest.raises(InvalidRequest) as info:
        prepare(IMAGE, inputs)
    assert message in str(info.value)


def test_lists_take_the_model_datatype_but_arrays_are_strict():
    arrays, _ = prepare(IMAGE, images(1).tolist())
    assert arrays["image"].dtype == np.float32
    with pytest.raises(InvalidRequest, match="cannot convert"):
        prepare(IMAGE, [[["a"]]])


def test_texts_become_a_bytes_column():
    arrays, batch = prepare(TEXT, ["my parcel never arrived", "refund please"])
    assert batch == 2 and arrays["text"].shape == (2, 1) and arrays["text"][0, 0] == b"my parcel never arrived"
    with pytest.raises(InvalidRequest, match="empty request: no rows for model 'textclf_text'"):
        prepare(TEXT, [])


def test_token_models_need_a_tokenizer_for_text(tmp_path):
    with pytest.raises(InvalidRequest, match=r"takes token ids \(input_ids INT64 \[batch<=8, any\]\), not text.*--tokenizer"):
        prepare(TOKENS, ["where is my order"])
    from tokenizers import Tokenizer as HF, models, pre_tokenizers

    tok = HF(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "where": 2, "is": 3, "my": 4, "order": 5}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    arrays, batch = prepare(TOKENS, ["where is my order", "order"], Tokenizer(path))
    assert batch == 2
    np.testing.assert_array_equal(arrays["input_ids"], [[2, 3, 4, 5], [5, 0, 0, 0]])
    assert arrays["input_ids"].dtype == np.int64
    with pytest.raises(InvalidRequest, match="does not exist"):
        Tokenizer(tmp_path / "missing.json")


def test_results_use_labels_from_config_or_the_class_index():
    probabilities = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)
    result = interpret(IMAGE, {"probabilities": probabilities}, "http")
    assert result.labels == ["1", "0"] and np.allclose(result.scores, [0.7, 0.6])
    logits = np.array([[0.0, 0.0, 0.0, 5.0]], np.float32)
    result = interpret(TOKENS, {"logits": logits}, "grpc")
    assert result.labels == ["other"] and 0.9 < result.scores[0] < 1.0
    result = interpret(TEXT, {"label": np.array([[b"delivery"]], object), "score": np.array([[0.93]], np.float32)},
                       "grpc")
    assert result.labels == ["delivery"] and np.isclose(result.scores[0], 0.93)
    assert json.loads(json.dumps(result.to_json()))["predictions"][0]["label"] == "delivery"


def test_model_info_is_the_same_from_http_json_and_grpc_protobuf():
    http_metadata = {"name": "toy", "versions": ["1"], "platform": "python",
                     "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
                     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}
    http_config = {"name": "toy", "max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [8]},
                   "parameters": {"labels": {"string_value": "[\"cat\", \"dog\", \"bird\"]"}}}
    grpc_config = {"config": {"name": "toy", "max_batch_size": "8", "dynamic_batching": {},
                              "parameters": {"labels": {"string_value": "cat, dog, bird"}}}}
    from_http = build_model_info(metadata_from_json(http_metadata), config_from_json(http_config))
    from_grpc = build_model_info(metadata_from_json(http_metadata), config_from_json(grpc_config))
    assert from_http == from_grpc
    assert from_http.labels == ("cat", "dog", "bird") and from_http.max_batch_size == 8
    assert from_http.inputs[0].shape == (-1, 4)
