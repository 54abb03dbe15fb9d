"""Model sources (builders/sources/): each adapter's signature and held-out data, each task's parity, INT8 and gate
decision, and every kind of bad input stopping with one line that names the file and the field or line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import GateFailure, UserError
from builders.sources import SourceSpec, open_source
from builders.sources.base import HeldOut, Signature, generated_heldout, read_signature
from tests.builders import byom


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- signatures and held-out data ------------------------------------------------------------------------------------
def test_a_signature_toml_is_read_with_its_tokenizer_resolved_next_to_it(tmp_path):
    shutil.copy(byom.minilm_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "sig.toml").write_text('task = "embedding"\n[[inputs]]\nname = "input_ids"\ndtype = "int64"\n'
                                       'shape = ["batch", "sequence"]\n[[outputs]]\nname = "vector"\n'
                                       'dtype = "float32"\nshape = ["batch", 8]\n[preprocessing]\n'
                                       'tokenizer_file = "tokenizer.json"\nmax_length = 32\n')
    signature = read_signature(tmp_path / "sig.toml")
    assert signature.task == "embedding" and signature.preprocessing.tokenizer_file == tmp_path / "tokenizer.json"
    assert signature.input_names == ["input_ids"] and signature.output_names == ["vector"]


@pytest.mark.parametrize("text, field", [
    ('task = "classification"\nlabels = ["a"]\n' + byom.REGRESSOR_SIGNATURE.split("\n", 1)[1], "outputs[0]"),
    (byom.REGRESSOR_SIGNATURE.replace('"batch", 6', '6'), "must start with"),
    (byom.REGRESSOR_SIGNATURE.replace('task = "generic"', 'task = "ranking"'), "task"),
])
def test_a_bad_signature_names_its_file_and_field(tmp_path, text, field):
    path = tmp_path / "sig.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_signature(path)
    assert str(path) in _one_line(info.value) and field in str(info.value)


def _text_signature(task="classification", labels=("billing", "other")):
    return Signature.model_validate({
        "task": task, "labels": list(labels) if task == "classification" else [],
        "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]}
                   for n in ("input_ids", "attention_mask", "token_type_ids")],
        "outputs": [{"name": "logits" if task == "classification" else "embedding", "dtype": "float32",
                     "shape": ["batch", len(labels) if task == "classification" else 8]}],
        "preprocessing": {"tokenizer_file": str(byom.minilm_dir() / "tokenizer.json"), "max_length": 16,
                          "pad_values": {"attention_mask": 0, "token_type_ids": 0}}})


def test_jsonl_texts_with_labels_are_tokenized_truncated_and_batched_ragged(tmp_path):
    from builders.sources.heldout import read_heldout

    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"text": "refund my invoice please", "label": "billing"}) + "\n\n"
                    + json.dumps({"text": "word " * 100, "label": 1}) + "\n")
    heldout = read_heldout(path, _text_signature())
    assert heldout.kind == "labels" and heldout.gating and heldout.size == 2
    [batch] = list(heldout.batches(8))
    ids, mask, types = batch.inputs
    assert ids.shape == (2, 16) and mask.shape == (2, 16) and types.shape == (2, 16)  # truncated at max_length 16
    short = int(mask[0].sum())
    assert 4 < short < 16 and (ids[0, short:] == 0).all() and (mask[0, short:] == 0).all()  # right-padded
    assert mask[1].sum() == 16 and ids[0, 0] == ids[1, 0] == 101  # [CLS] first, the long text truncated
    assert batch.targets.tolist() == [0, 1]


def test_jsonl_pairs_give_both_sides_and_their_indexes(tmp_path):
    from builders.sources.heldout import read_heldout

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"text": f"query {i}", "pair": f"answer {i}"}) + "\n" for i in range(3)))
    heldout = read_heldout(path, _text_signature("embedding"))
    assert heldout.kind == "pairs" and heldout.size == 6 and heldout.pairs == [(0, 3), (1, 4), (2, 5)]
    assert heldout.texts[3] == "answer 0"


@pytest.mark.parametrize("lines, where, expected", [
    (['{"text": "fine", "label": "billing"}', '{"text": "bad" "label": 1}'], ":2:", "not valid JSON"),
    (['{"text": "fine", "label": "billing"}', '{"text": "x", "label": "weather"}'], ":2:", "field 'label'"),
    (['{"text": ""}'], ":1:", "field 'text' must be a non-empty string"),
    (['{"text": "a", "label": 0}', '{"text": "b"}'], ":2:", "expected every line to have the same fields"),
    (['["text"]'], ":1:", "expected a JSON object"),
])
def test_a_malformed_heldout_line_names_the_file_line_and_field(tmp_path, lines, where, expected):
    from builders.sources.heldout import read_heldout

    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_heldout(path, _text_signature())
    message = _one_line(info.value)
    assert f"{path}{where}" in message and expected in message


def test_npz_heldout_is_checked_against_the_signature(tmp_path):
    from builders.sources.heldout import read_heldout

    signature = Signature.model_validate({"task": "generic", "inputs": [{"name": "x", "dtype": "float32",
                                                                         "shape": ["batch", 4]}],
                                          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 1]}]})
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((5, 4), np.float32))
    heldout = read_heldout(good, signature)
    assert heldout.kind == "tensors" and not heldout.gating
    assert [b.inputs[0].shape for b in heldout.batches(2)] == [(2, 4), (2, 4), (1, 4)]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((5, 3), np.float32))
    with pytest.raises(UserError, match=r"bad\.npz: array 'x' has shape \[5, 3\]; the signature says \['batch', 4\]"):
        read_heldout(bad, signature)
    wrong_type = tmp_path / "int.npz"
    np.savez(wrong_type, x=np.zeros((5, 4), np.int64))
    with pytest.raises(UserError, match="array 'x' has dtype int64; the signature says float32"):
        read_heldout(wrong_type, signature)


def test_without_heldout_inputs_are_generated_with_mixed_lengths_and_gating_is_off():
    heldout = generated_heldout(_text_signature("embedding"), samples=8)
    assert heldout.kind == "generated" and not heldout.gating
    [batch] = list(heldout.batches(8))
    ids, mask, _ = batch.inputs
    assert ids.shape[1] == 16 and sorted(set(mask.sum(axis=1).tolist())) != [16]  # some rows are padded
    assert ((ids == 0) == (mask == 0)).all()


# -- adapters ------------------------------------------------------------------------------------------------------
def test_hf_embedding_source_honours_modules_json_pooling_and_normalises_in_the_graph(tmp_path):
    import torch
    from transformers import AutoModel

    root = byom.tiny_bert_dir(tmp_path / "tiny", "embedding", pooling="cls")
    source = open_source(SourceSpec(hf_dir=root, task="embedding"), "tiny")
    assert source.signature.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert [(t.name, t.shape) for t in source.signature.outputs] == [("embedding", ("batch", 32))]
    assert source.signature.preprocessing.max_length == 64  # sentence_bert_config.json
    assert source.origin["pooling"] == "cls"
    ids = torch.tensor([[101, 2023, 2003, 102, 0], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    [vector] = source.module()(ids, mask, torch.zeros_like(ids))
    plain = AutoModel.from_pretrained(str(root), local_files_only=True).eval()
    with torch.inference_mode():
        cls = plain(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    torch.testing.assert_close(vector, torch.nn.functional.normalize(cls, dim=-1), atol=1e-6, rtol=1e-5)


def test_hf_classification_source_takes_labels_from_id2label(tmp_path):
    root = byom.tiny_bert_dir(tmp_path / "tiny", "classification")
    source = open_source(SourceSpec(hf_dir=root, task="classification"))
    assert source.labels == ["negative", "positive"] and source.name == "tiny"
    assert source.signature.output_names == ["logits", "probabilities"]


def test_a_finetuning_run_is_delegated_to_the_hf_adapter_with_the_manifest_labels(tmp_path):
    hf = byom.tiny_bert_dir(tmp_path / "tiny", "classification")
    run = byom.finetune_run(tmp_path / "run", hf)
    source = open_source(SourceSpec(run_dir=run))
    assert source.kind == "hf" and source.task == "classification" and source.name == "tinysent"
    assert source.root == run / "hf" and source.labels == ["negative", "positive"]
    assert source.origin["kind"] == "training-run+hf" and source.origin["data_version"] == "test"


def test_a_training_run_is_rebuilt_through_the_factory_its_manifest_names(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["factory"] = "tests.builders.no_such_module:get"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError) as info:
        open_source(SourceSpec(run_dir=run))
    assert "manifest.json: factory 'tests.builders.no_such_module:get': module 'tests.builders.no_such_module' " \
           "does not import" in _one_line(info.value)
    source = open_source(SourceSpec(run_dir=digits_run))
    assert source.factory == "training.models:get" and source.task == "classification"
    assert source.heldout().kind == "labels" and source.calibration().identity["split"] == "val"


def test_builders_code_never_imports_training():
    root = Path(__file__).resolve().parents[2] / "builders"
    offenders = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                 if any(line.strip().startswith(("import training", "from training"))
                        for line in p.read_text().splitlines())]
    assert offenders == []


# -- bad input: one line naming the file and what was expected ------------------------------------------------------
def test_a_hf_dir_missing_a_file_is_named(tmp_path):
    root = byom.tiny_bert_dir(tmp_path / "tiny", "embedding")
    (root / "tokenizer.json").unlink()
    with pytest.raises(UserError) as info:
        open_source(SourceSpec(hf_dir=root, task="embedding"))
    assert f"{root / 'tokenizer.json'} is missing" in _one_line(info.value)
    root2 = byom.tiny_bert_dir(tmp_path / "tiny2", "embedding")
    (root2 / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"tiny2/model\.safetensors is missing"):
        open_source(SourceSpec(hf_dir=root2, task="embedding"))
    (root2 / "1_Pooling" / "config.json").unlink()


def test_an_architecture_transformers_cannot_load_offline_names_config_json_and_model_type(tmp_path):
    root = byom.tiny_bert_dir(tmp_path / "tiny", "embedding")
    config = json.loads((root / "config.json").read_text())
    config["model_type"] = "bert-from-the-future"
    config["architectures"] = ["FutureModel"]
    (root / "config.json").write_text(json.dumps(config))
    source = open_source(SourceSpec(hf_dir=root, task="embedding"))
    with pytest.raises(UserError) as info:
        source.module()
    message = _one_line(info.value)
    assert f"{root / 'config.json'}: transformers" in message and "cannot load this model offline" in message
    assert "'bert-from-the-future'" in message


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path):
    root = byom.tiny_bert_dir(tmp_path / "tiny", "embedding", vocab_size=1000)
    with pytest.raises(UserError) as info:
        open_source(SourceSpec(hf_dir=root, task="embedding"))
    message = _one_line(info.value)
    assert f"{root / 'tokenizer.json'}: the tokenizer has 30522 tokens but config.json field 'vocab_size' is 1000" \
        in message


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.replace('name = "x"', 'name = "features"'), "graph inputs are ['x'] but"),
    (lambda s: s.replace('dtype = "float32"\nshape = ["batch", 4]', 'dtype = "int64"\nshape = ["batch", 4]'),
     "input 'x' is float32 but"),
    (lambda s: s.replace('shape = ["batch", 4]', 'shape = ["batch", 5]'), "input 'x' axis 1 is 4 but"),
    (lambda s: s[:s.rindex('shape = ["batch", 3]')] + 'shape = ["batch", 3, 1]\n', "output 'probabilities' has rank 2"),
])
def test_an_onnx_file_whose_inputs_disagree_with_its_signature_is_refused(tmp_path, edit, expected):
    onnx_path, signature, _ = byom.plain_onnx_classifier(tmp_path)
    signature.write_text(edit(signature.read_text()))
    with pytest.raises(UserError) as info:
        open_source(SourceSpec(onnx=onnx_path, signature=signature))
    message = _one_line(info.value)
    assert str(onnx_path) in message and expected in message and str(signature) in message


@pytest.mark.parametrize("factory, expected", [
    ("tests.builders.no_such_module:make", "module 'tests.builders.no_such_module' does not import"),
    ("tests.builders.factory_models:missing", "has no attribute 'missing'"),
    ("tests.builders.factory_models", "is not of the form package.module:function"),
    ("tests.builders.factory_models:not_a_module", "returned str; expected a torch.nn.Module"),
])
def test_a_factory_string_that_does_not_give_a_module_is_named(tmp_path, factory, expected):
    _, weights, signature = byom.factory_regressor(tmp_path)
    with pytest.raises(UserError) as info:
        open_source(SourceSpec(factory=factory, weights=weights, signature=signature))
    assert f"--factory {factory!r}" in _one_line(info.value) and expected in str(info.value)


def test_factory_weights_that_do_not_fit_name_the_file_and_key(tmp_path):
    from safetensors.torch import save_file
    import torch

    factory, weights, signature = byom.factory_regressor(tmp_path)
    save_file({"body.0.weight": torch.zeros(16, 6)}, str(weights))
    with pytest.raises(UserError, match=r"regressor\.safetensors does not match the module: missing body\.0\.bias"):
        open_source(SourceSpec(factory=factory, weights=weights, signature=signature))


def test_exactly_one_source_is_required():
    with pytest.raises(UserError, match="give exactly one model source.*got 0"):
        SourceSpec().kind()
    with pytest.raises(UserError, match="got 2: --run-dir, --hf-dir"):
        SourceSpec(run_dir=Path("a"), hf_dir=Path("b")).kind()


# -- each task's parity, INT8 decision and gate -----------------------------------------------------------------------
def _fixed(outputs):
    return lambda inputs: [o[: len(inputs[0])] for o in outputs]


def _rows_heldout(n, pairs=()):
    from builders.sources.base import Batch

    def make(batch_size, limit):
        count = n if limit is None else min(n, limit)
        for start in range(0, count, batch_size):
            yield Batch([np.arange(start, min(count, start + batch_size))[:, None].astype(np.float32)])

    return HeldOut(make, n, "pairs" if pairs else "tensors", "test", pairs=list(pairs))


def _index_runner(table):
    return lambda inputs: [table[inputs[0][:, 0].astype(int)]]


def test_embedding_parity_is_judged_by_cosine_and_nearest_neighbour_agreement():
    from builders.parity import compare
    from builders.settings import Tolerance

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((40, 16))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    pairs = [(i, 20 + i) for i in range(20)]
    close = reference + 1e-4 * rng.standard_normal(reference.shape)
    heldout = _rows_heldout(40, pairs)
    tol = lambda _name: Tolerance(atol=1e-9, rtol=0)  # element-wise errors are reported, never gate embeddings
    report = compare(_index_runner(reference), _index_runner(close), heldout.batches(8), ["embedding"], tol, 1.0,
                     "a", "b", "embedding", pairs, 0.9999, 0.98)
    assert report.passed and report.outputs[0].violations > 0 and report.min_cosine > 0.9999
    assert report.neighbour_agreement == 1.0
    shuffled = reference.copy()
    shuffled[20:] = reference[20:][::-1]  # partners swapped: every nearest neighbour changes
    bad = compare(_index_runner(reference), _index_runner(shuffled), heldout.batches(8), ["embedding"], tol, 1.0,
                  "a", "b", "embedding", pairs, 0.5, 0.98)
    assert not bad.passed and any("nearest-neighbour rankings agree" in r for r in bad.failures())
    drifted = reference + 0.2 * rng.standard_normal(reference.shape)
    low = compare(_index_runner(reference), _index_runner(drifted), heldout.batches(8), ["embedding"], tol, 1.0,
                  "a", "b", "embedding", [], 0.9999, 0.0)
    assert not low.passed and "lowest per-example cosine" in low.failures()[0]


def test_generic_parity_is_per_output_atol_rtol_without_argmax():
    from builders.parity import compare
    from builders.settings import Tolerance

    table = np.linspace(0, 1, 24, dtype=np.float64).reshape(12, 2)
    heldout = _rows_heldout(12)
    shifted = table.copy()
    shifted[:, ::-1] += 1e-6  # argmax flips on no row, but values move by 1e-6
    ok = compare(_index_runner(table), _index_runner(shifted), heldout.batches(4), ["y"],
                 lambda _n: Tolerance(atol=1e-5, rtol=0), 1.0, "a", "b", "generic")
    assert ok.passed
    off = compare(_index_runner(table), _index_runner(table + 1e-3), heldout.batches(4), ["y"],
                  lambda _n: Tolerance(atol=1e-5, rtol=0), 1.0, "a", "b", "generic")
    assert not off.passed and "outside atol" in off.failures()[0]


def test_quality_by_task_and_accuracy_gating_off_without_labels():
    from builders.metrics import quality

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((10, 8))
    pairs = [(i, 5 + i) for i in range(5)]
    vectors[5:] = vectors[:5] + 0.01 * rng.standard_normal((5, 8))
    found = quality("embedding", _index_runner(vectors), _rows_heldout(10, pairs), 4)
    assert found.name == "recall_at_1" and found.value == 1.0
    off = quality("generic", _index_runner(vectors), _rows_heldout(10), 4)
    assert off.value is None and off.note.startswith("accuracy gating is off")


def test_the_gate_compares_quality_when_there_is_some_and_parity_alone_otherwise():
    from builders.gate import ServingBaseline, decide, enforce

    worse = decide(True, [], 0.80, ServingBaseline(3, 0.90, "re-evaluated"), 0.005, "recall_at_1")
    assert not worse.passed and "held-out recall_at_1 0.8000 is below serving version 3's 0.9000" in worse.reasons[0]
    with pytest.raises(GateFailure):
        enforce(worse, "m")
    parity_only = decide(True, [], None, ServingBaseline(3, 0.90, "re-evaluated"), 0.005, "accuracy")
    assert parity_only.passed and "accuracy gating off" in parity_only.summary()
    reference = decide(True, [], None, None, 0.005, "accuracy", ["cosine to sentence-transformers is 0.98"])
    assert not reference.passed


def test_int8_of_a_generic_model_is_refused_outside_its_tolerance_and_accepted_within(tmp_path):
    """The real INT8 path on a generic factory model: ONNX Runtime dynamic quantization, judged element-wise."""
    from builders.pipeline import export_and_verify
    from builders.quantize import build_int8
    from builders.settings import BuildConfig, QuantizeConfig

    factory, weights, signature = byom.factory_regressor(tmp_path)
    source = open_source(SourceSpec(factory=factory, weights=weights, signature=signature))
    heldout = source.heldout()
    exp = export_and_verify(source, heldout, tmp_path / "export", BuildConfig())
    loose = build_int8(source, heldout, exp.onnx.path, tmp_path / "a.int8.onnx",
                       QuantizeConfig(latency_iterations=2, tolerance={"atol": 1.0, "rtol": 1.0}), 16)
    assert loose.accepted and loose.fp32_accuracy is None and loose.parity["task"] == "generic"
    strict = build_int8(source, heldout, exp.onnx.path, tmp_path / "b.int8.onnx",
                        QuantizeConfig(latency_iterations=2, tolerance={"atol": 1e-7, "rtol": 0.0}), 16)
    assert not strict.accepted and "outside atol" in strict.reason and strict.reason.endswith("not published")


def test_the_number_of_generated_inputs_is_a_setting(tmp_path):
    from builders.pipeline import BuildRequest, _load
    from builders.settings import BuildConfig

    factory, weights, signature = byom.factory_regressor(tmp_path)
    settings = BuildConfig.model_validate({"parity": {"generated_samples": 10}})
    source, heldout, profiles = _load(BuildRequest(factory=factory, weights=weights, signature=signature), settings)
    assert heldout.kind == "generated" and heldout.size == 10 and profiles[0].inputs["features"].max == (64, 6)


def test_generated_token_ids_stay_inside_the_declared_vocabulary():
    signature = _text_signature("embedding")
    signature.preprocessing.vocab_size = 40
    [batch] = list(generated_heldout(signature, samples=16).batches(16))
    assert batch.inputs[0].max() < 40 and batch.inputs[0].min() >= 0


def test_int8_keeps_the_matmuls_a_gelu_feeds_in_fp32():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from builders.quantize import gelu_fed_matmuls

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["up"], name="up_proj"),
             helper.make_node("Erf", ["up"], ["erf"], name="erf"),
             helper.make_node("Mul", ["erf", "half"], ["gelu"], name="gelu"),
             helper.make_node("MatMul", ["gelu", "w"], ["down"], name="down_proj"),
             helper.make_node("Relu", ["down"], ["relu"], name="relu"),
             helper.make_node("MatMul", ["relu", "w"], ["y"], name="after_relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, half])
    assert gelu_fed_matmuls(helper.make_model(graph)) == ["down_proj"]
    onnx.checker.check_model(helper.make_model(graph))
