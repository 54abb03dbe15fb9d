"""TensorRT without TensorRT: plan metadata, the host compatibility check, and linting a tensorrt config against it.

The engine build itself needs TensorRT and a GPU (marked, skipped here with the reason); everything around it is
plain Python and is checked on every machine.
"""
from __future__ import annotations

import pytest

from common.errors import UserError
from common.files import atomic_write_text
from builders import triton_configs as tc
from builders.lint import lint_model_dir
from builders.settings import BuildConfig
from builders.shapes import derive_profiles
from builders.tensorrt_meta import (HostInfo, PlanMetadata, check_compatible, ensure_compatible, metadata_path,
                                    read_metadata)
from tests.builders.test_profiles_configs import TEXT_MANIFEST


def make_meta(profiles, **overrides) -> PlanMetadata:
    data = dict(tensorrt_version="10.5.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                precision="fp16", profiles=[p.to_dict() for p in profiles],
                inputs=[{"name": "input_ids", "dtype": "int64", "shape": [-1, -1]}],
                outputs=[{"name": "logits", "dtype": "float32", "shape": [-1, 4]},
                         {"name": "probabilities", "dtype": "float32", "shape": [-1, 4]}],
                onnx_sha256="a" * 64, plan_sha256="b" * 64, workspace_mib=2048, optimization_level=3,
                built_at="2026-01-01T00:00:00+00:00")
    data.update(overrides)
    return PlanMetadata.model_validate(data)


@pytest.fixture
def profiles():
    return derive_profiles(TEXT_MANIFEST.inputs, TEXT_MANIFEST.preprocessing, BuildConfig())


H100 = ("NVIDIA H100 80GB HBM3", "9.0")


def test_same_gpu_and_version_is_compatible(profiles):
    assert check_compatible(make_meta(profiles), HostInfo("10.5.0", (H100,))) == []


@pytest.mark.parametrize("host, expected", [
    (HostInfo("10.7.0", (H100,)), "this host has TensorRT 10.7.0; rebuild the plan here"),
    (HostInfo(None, (H100,)), "TensorRT is not installed here"),
    (HostInfo("10.5.0", ()), "this host has no CUDA GPU"),
    (HostInfo("10.5.0", (("NVIDIA A100-SXM4-80GB", "8.0"),)), "the plan needs compute capability 9.0: rebuild it on this GPU"),
])
def test_mismatch_is_refused_naming_the_rebuild(profiles, host, expected):
    problems = check_compatible(make_meta(profiles), host)
    assert any(expected in p for p in problems), problems
    with pytest.raises(UserError, match="built with TensorRT 10.5.0 for NVIDIA H100"):
        ensure_compatible(make_meta(profiles), host)


def test_compatibility_modes_relax_the_check(profiles):
    a100 = HostInfo("10.7.0", (("NVIDIA A100-SXM4-80GB", "8.0"),))
    relaxed = make_meta(profiles, hardware_compatibility="ampere_plus", version_compatible=True)
    assert check_compatible(relaxed, a100) == []
    older_runtime = HostInfo("10.4.0", (H100,))
    assert check_compatible(relaxed, older_runtime), "a version-compatible plan still needs a runtime >= its builder"
    turing = HostInfo("10.5.0", (("Tesla T4", "7.5"),))
    assert any("an Ampere or newer GPU" in p for p in check_compatible(relaxed, turing))


def test_metadata_round_trip_and_errors(tmp_path, profiles):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    with pytest.raises(UserError, match="model.plan.json is missing"):
        read_metadata(plan)
    meta = make_meta(profiles)
    atomic_write_text(metadata_path(plan), meta.model_dump_json())
    assert read_metadata(plan) == meta
    assert meta.max_batch() == 64
    atomic_write_text(metadata_path(plan), meta.model_dump_json().replace('"9.0"', '"nine"'))
    with pytest.raises(UserError, match="compute_capability"):
        read_metadata(plan)


def _tensorrt_model_dir(tmp_path, profiles, meta: PlanMetadata, settings: BuildConfig):
    model_dir = tmp_path / "textclf"
    version = model_dir / "1"
    version.mkdir(parents=True)
    (version / "model.plan").write_bytes(b"serialized engine")
    atomic_write_text(metadata_path(version / "model.plan"), meta.model_dump_json())
    config = tc.tensorrt_config("textclf", TEXT_MANIFEST, profiles, settings)
    atomic_write_text(model_dir / "configs" / "tensorrt.pbtxt", tc.to_text(config))
    return model_dir, config


def test_generated_tensorrt_config_lints_clean_against_the_plan_metadata(tmp_path, profiles):
    model_dir, _ = _tensorrt_model_dir(tmp_path, profiles, make_meta(profiles), BuildConfig())
    assert lint_model_dir(model_dir, "tensorrt") == []


def test_max_batch_size_above_the_profile_is_a_finding(tmp_path):
    small = BuildConfig.model_validate({"serving": {"max_batch_size": 32, "warmup_batch_sizes": [1, 32]}})
    small_profiles = derive_profiles(TEXT_MANIFEST.inputs, TEXT_MANIFEST.preprocessing, small)
    model_dir, config = _tensorrt_model_dir(tmp_path, small_profiles, make_meta(small_profiles), small)
    config.max_batch_size = 64
    atomic_write_text(model_dir / "configs" / "tensorrt.pbtxt", tc.to_text(config))
    findings = [str(f) for f in lint_model_dir(model_dir, "tensorrt")]
    assert "configs/tensorrt.pbtxt: max_batch_size: 64 exceeds the TensorRT profile maximum 32" in findings


def test_config_that_disagrees_with_the_plan_io_is_a_finding(tmp_path, profiles):
    meta = make_meta(profiles, inputs=[{"name": "input_ids", "dtype": "int32", "shape": [-1, -1]}])
    model_dir, _ = _tensorrt_model_dir(tmp_path, profiles, meta, BuildConfig())
    findings = [str(f) for f in lint_model_dir(model_dir, "tensorrt")]
    assert any(f.startswith("configs/tensorrt.pbtxt: input[0].data_type: TYPE_INT64 but 1/model.plan") for f in findings)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_build_matches_onnxruntime(digits_run, tmp_path):
    """On a GPU host: a real FP16 plan from the digits ONNX, metadata written, parity vs ONNX Runtime passes."""
    from builders import tensorrt_build
    from builders.pipeline import HeldOutSplits, export_and_verify
    from builders.sources.training_run import TrainingRunSource

    exported = TrainingRunSource(digits_run)
    splits = HeldOutSplits(test=exported.heldout(), val=exported.calibration())
    settings = BuildConfig.model_validate({"tensorrt": {"timing_cache": str(tmp_path / "timing.cache")}})
    exp = export_and_verify(exported, splits, tmp_path / "export", settings)
    profiles = derive_profiles(exported.manifest.inputs, exported.manifest.preprocessing, settings)
    result = tensorrt_build.build_and_verify(exported, splits, exp.onnx.path, profiles, settings, tmp_path / "trt")
    assert result.parity.passed
    assert read_metadata(result.plan).onnx_sha256 == exp.onnx.sha256
    assert (tmp_path / "timing.cache").stat().st_size > 0


@pytest.mark.slow
def test_publishing_a_plan_this_host_cannot_run_is_refused(built_repository, tmp_path, profiles):
    """On a machine without TensorRT/GPU, a package carrying a plan is refused before the repository changes."""
    from builders.repository import package_from_version, publish_package
    from tests.builders.conftest import copy_repository, tree_state

    repository = copy_repository(built_repository, tmp_path / "repo")
    package = package_from_version(repository, "digits", 1, tmp_path / "package")
    plan = package.version_dir("digits") / "model.plan"
    plan.write_bytes(b"engine")
    atomic_write_text(metadata_path(plan), make_meta(profiles).model_dump_json())
    before = tree_state(repository)
    with pytest.raises(UserError, match="digits/model.plan: built with TensorRT 10.5.0 for NVIDIA H100"):
        publish_package(package, repository, plan_check=True)
    assert tree_state(repository) == before


def test_plan_check_command_refuses_with_the_rebuild_needed(tmp_path, profiles, capsys):
    from common.errors import run_cli
    from builders.__main__ import main

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    atomic_write_text(metadata_path(plan), make_meta(profiles).model_dump_json())
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["plan-check", str(plan)])
    assert info.value.code == UserError.exit_code
    err = capsys.readouterr().err
    assert "built with TensorRT 10.5.0 for NVIDIA H100 80GB HBM3 (compute capability 9.0)" in err
    assert "serve it from the NGC Triton image with TensorRT 10.5.0" in err
