"""Pure-Python parts: profile derivation, generated configs (validated by Triton's schema), settings errors."""
from __future__ import annotations

import json

import pytest

from common.errors import UserError
from common.manifest import TensorSpec
from common.triton_config import parse_config_text
from builders import triton_configs as tc
from builders.settings import BuildConfig
from builders.shapes import derive_profiles, max_dims, warmup_samples

TEXT_INPUTS = [TensorSpec(name="input_ids", dtype="int64", shape=("batch", "sequence"))]
IMAGE_INPUTS = [TensorSpec(name="image", dtype="float32", shape=("batch", 1, 8, 8))]


def settings(**data) -> BuildConfig:
    return BuildConfig.model_validate(data)


def test_default_profile_uses_serving_batch_and_manifest_max_length():
    [profile] = derive_profiles(TEXT_INPUTS, {"max_length": 128}, settings())
    r = profile.inputs["input_ids"]
    assert (r.min, r.opt, r.max) == ((1, 1), (8, 64), (64, 128))
    [image] = derive_profiles(IMAGE_INPUTS, {}, settings())
    assert image.inputs["image"].max == (64, 1, 8, 8)
    assert image.inputs["image"].min == (1, 1, 8, 8)


def test_declared_profiles_and_max_dims_over_profiles():
    cfg = settings(serving={"max_batch_size": 32, "opt_batch_size": 4, "dynamic_batching": {"preferred_batch_sizes": [8]}},
                   shapes={"profiles": [
                       {"batch": {"min": 1, "opt": 4, "max": 8}, "dims": {"sequence": {"min": 1, "opt": 16, "max": 32}}},
                       {"batch": {"min": 8, "opt": 16, "max": 32}, "dims": {"sequence": {"min": 16, "opt": 64, "max": 96}}},
                   ]})
    profiles = derive_profiles(TEXT_INPUTS, {"max_length": 128}, cfg)
    assert [p.batch for p in profiles] == [(1, 4, 8), (8, 16, 32)]
    assert profiles[1].inputs["input_ids"].max == (32, 96)
    assert max_dims(profiles) == {"input_ids": [96]}
    names = [s.name for s in warmup_samples(profiles, [1, 2, 4, 8, 16, 32, 64], 32)]
    assert names == ["profile0_batch1", "profile0_batch2", "profile0_batch4", "profile0_batch8", "profile0_max",
                     "profile1_batch8", "profile1_batch16", "profile1_batch32", "profile1_max"]


@pytest.mark.parametrize("data, message", [
    ({"shapes": {"profiles": [{"batch": {"min": 1, "opt": 4, "max": 16}}]}},
     "serving.max_batch_size 64 exceeds the largest profile batch maximum 16"),
    ({"shapes": {"profiles": [{"batch": {"min": 1, "opt": 4, "max": 128}}]}},
     "shapes.profiles[0].batch.max 128 exceeds serving.max_batch_size 64"),
    ({"shapes": {"profiles": [{"dims": {"width": {"min": 1, "opt": 2, "max": 3}}}]}},
     "shapes.profiles[0].dims: width is not an axis of any input"),
])
def test_profile_errors_name_the_field(data, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        derive_profiles(TEXT_INPUTS, {"max_length": 128}, settings(**data))


def test_dynamic_axis_without_range_is_refused():
    with pytest.raises(UserError, match="dynamic axis 'sequence' with no declared range"):
        derive_profiles(TEXT_INPUTS, {}, settings())


def test_settings_errors_name_the_field():
    from common.config import validate

    with pytest.raises(UserError, match=r"serving: .*preferred_batch_sizes \[128\] exceed max_batch_size 64"):
        validate(BuildConfig, {"serving": {"dynamic_batching": {"preferred_batch_sizes": [128]}}}, "b.toml")
    with pytest.raises(UserError, match=r"b.toml: parity.sampels: Extra inputs are not permitted"):
        validate(BuildConfig, {"parity": {"sampels": 3}}, "b.toml")
    with pytest.raises(UserError, match="expected min <= opt <= max"):
        validate(BuildConfig, {"shapes": {"profiles": [{"batch": {"min": 4, "opt": 2, "max": 8}}]}}, "b.toml")


def _manifest(inputs, outputs, preprocessing):
    from common.manifest import FileRef, Manifest

    return Manifest(model="m", arch={}, inputs=inputs, outputs=outputs, labels=["a", "b", "c", "d"],
                    weights=FileRef(file="model.safetensors", sha256="0" * 64), preprocessing=preprocessing,
                    metrics={}, data_version="d", code_version="c", created_at="now")


TEXT_MANIFEST = _manifest(TEXT_INPUTS, [TensorSpec(name="logits", dtype="float32", shape=("batch", 4)),
                                        TensorSpec(name="probabilities", dtype="float32", shape=("batch", 4))],
                          {"pad_id": 0, "max_length": 128})


def test_cpu_config_is_valid_and_carries_every_knob():
    cfg = settings(cpu_runtime={"intra_op_num_threads": 3, "allow_spinning": True, "queue_policy": True},
                   serving={"dynamic_batching": {"max_queue_delay_microseconds": 250, "queue": {"max_queue_size": 7}}})
    profiles = derive_profiles(TEXT_MANIFEST.inputs, TEXT_MANIFEST.preprocessing, cfg)
    text = tc.to_text(tc.cpu_config("textclf", TEXT_MANIFEST, profiles, cfg))
    config = parse_config_text(text, "generated")
    assert config.backend == "python" and config.max_batch_size == 64
    assert [(i.name, list(i.dims)) for i in config.input] == [("input_ids", [-1])]
    assert [o.name for o in config.output] == ["logits", "probabilities"]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["intra_op_num_threads"] == "3" and params["allow_spinning"] == "1"
    assert json.loads(params["pad_values"]) == {"input_ids": 0}
    # ragged: the dynamic batcher may merge messages of different lengths; the runtime pads them
    assert [i.allow_ragged_batch for i in config.input] == [True]
    assert json.loads(params["max_dims"]) == {"input_ids": [128]}
    db = config.dynamic_batching
    assert db.max_queue_delay_microseconds == 250
    assert db.default_queue_policy.max_queue_size == 7
    assert db.default_queue_policy.timeout_action == db.default_queue_policy.REJECT
    assert config.version_policy.latest.num_versions == 1
    warm = {w.name: (w.batch_size, list(w.inputs["input_ids"].dims), w.inputs["input_ids"].zero_data)
            for w in config.model_warmup}
    assert warm["profile0_batch1"] == (1, [64], True)
    assert warm["profile0_batch64"] == (64, [64], True)
    assert warm["profile0_max"] == (64, [128], True)


def test_python_backend_configs_leave_out_the_queue_policy_by_default_but_gpu_configs_keep_it():
    cfg = settings()
    profiles = derive_profiles(TEXT_MANIFEST.inputs, TEXT_MANIFEST.preprocessing, cfg)
    cpu = parse_config_text(tc.to_text(tc.cpu_config("textclf", TEXT_MANIFEST, profiles, cfg)), "cpu")
    assert cpu.HasField("dynamic_batching") and not cpu.dynamic_batching.HasField("default_queue_policy")
    assert cpu.instance_group[0].count == 2 and cpu.parameters["intra_op_num_threads"].string_value == "1"
    trt = parse_config_text(tc.to_text(tc.tensorrt_config("textclf", TEXT_MANIFEST, profiles, cfg)), "trt")
    assert trt.dynamic_batching.default_queue_policy.max_queue_size == 1024
    assert trt.dynamic_batching.default_queue_policy.timeout_action == trt.dynamic_batching.default_queue_policy.REJECT


def test_onnxruntime_tensorrt_and_ensemble_configs_are_valid():
    cfg = settings()
    profiles = derive_profiles(TEXT_MANIFEST.inputs, TEXT_MANIFEST.preprocessing, cfg)
    ort = parse_config_text(tc.to_text(tc.onnxruntime_config("textclf", TEXT_MANIFEST, profiles, cfg)), "ort")
    assert ort.platform == "onnxruntime_onnx" and ort.default_model_filename == "model.onnx"
    assert not ort.input[0].allow_ragged_batch  # Triton's ORT backend would concatenate ragged inputs unpadded
    trt = parse_config_text(tc.to_text(tc.tensorrt_config("textclf", TEXT_MANIFEST, profiles, cfg)), "trt")
    assert trt.platform == "tensorrt_plan" and list(trt.instance_group[0].profile) == ["0"]
    ensemble = parse_config_text(tc.to_text(tc.text_ensemble_config("t_text", cfg, "t_tok", "t", "t_lab", "input_ids", 4)), "e")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["t_tok", "t", "t_lab"]
    assert {o.name for o in ensemble.output} == {"label", "score", "probabilities"}


def test_padding_is_only_allowed_when_outputs_cannot_depend_on_it():
    assert tc.pad_values(TEXT_MANIFEST) == {"input_ids": 0}
    per_token = _manifest(TEXT_INPUTS, [TensorSpec(name="tags", dtype="float32", shape=("batch", "sequence", 4))],
                          {"pad_id": 0, "max_length": 128})
    assert tc.pad_values(per_token) == {}


@pytest.mark.slow
def test_config_command_prints_valid_configs_for_a_run(digits_run, capsys):
    from builders.__main__ import main

    assert main(["config", "--run-dir", str(digits_run), "--target", "tensorrt"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# configs/tensorrt.pbtxt")
    config = parse_config_text(out.split("\n", 1)[1], "printed")
    assert config.platform == "tensorrt_plan" and list(config.input[0].dims) == [1, 8, 8]
    # the same set of configurations a build writes (it once left out the INT8 one)
    assert main(["config", "--run-dir", str(digits_run)]) == 0
    printed = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("# configs/")]
    assert printed == ["configs/onnxruntime.pbtxt", "configs/cpu_int8.pbtxt", "configs/tensorrt.pbtxt"]
