"""The decisions inside the TensorRT build that do not need a GPU: loading version-compatible plans, timing caches
TensorRT rejects, and which INT8 calibration cache a build may reuse.

What is real and what is simulated: the functions under test are the ones ``builders.tensorrt_build.build_plan`` and
``engine_runner`` call, unchanged. TensorRT itself cannot be installed on these machines, so the ``trt`` objects they
are handed are small fakes that reproduce only the documented contract each decision depends on (TensorRT 10.7
Python API):

* ``trt.Runtime.deserialize_cuda_engine`` returns ``None`` (it does not raise) for a plan it refuses, and it refuses a
  version-compatible plan (which embeds the lean runtime as host code) unless ``engine_host_code_allowed`` is True;
* ``IBuilderConfig.set_timing_cache(cache, ignore_mismatch=False)`` returns False for a cache made on another GPU
  or TensorRT version, leaving the config without a timing cache, so ``get_timing_cache()`` returns None.

Whether real TensorRT behaves so is checked by the GPU check (``python -m benchmarks gpu-check``) on a GPU host.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from builders.tensorrt_build import (attach_timing_cache, calibration_cache_path, deserialize_engine,
                                     fingerprint_batches, save_timing_cache, timing_cache_path)

VC_PLAN = b"VC:lean-runtime-inside"
PLAIN_PLAN = b"PLAIN:engine"


class FakeRuntime:
    """trt.Runtime: refuses host code unless allowed, returns None for what it refuses."""

    def __init__(self, logger):
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, data: bytes):
        if data.startswith(b"VC:") and not self.engine_host_code_allowed:
            return None
        if not data.startswith((b"VC:", b"PLAIN:")):
            return None
        return {"engine": data}


class FakeTrt:
    Runtime = FakeRuntime


def test_a_version_compatible_plan_is_loaded_with_host_code_allowed():
    runtime, engine = deserialize_engine(FakeTrt, None, VC_PLAN, version_compatible=True, source="model.plan")
    assert engine == {"engine": VC_PLAN} and runtime.engine_host_code_allowed is True


def test_a_plain_plan_is_loaded_without_allowing_host_code():
    runtime, engine = deserialize_engine(FakeTrt, None, PLAIN_PLAN, version_compatible=False, source="model.plan")
    assert engine == {"engine": PLAIN_PLAN} and runtime.engine_host_code_allowed is False


@pytest.mark.parametrize("data, compatible, expected", [
    (VC_PLAN, False, "could not deserialize model.plan"),  # the old code dereferenced None here
    (b"garbage", True, "version-compatible plan needs TensorRT 10.x"),
    (b"garbage", False, "rebuild it here"),
])
def test_a_refused_plan_is_a_one_line_error_not_a_none_dereference(data, compatible, expected):
    with pytest.raises(UserError, match=expected):
        deserialize_engine(FakeTrt, None, data, version_compatible=compatible, source="model.plan")


class FakeCache:
    def __init__(self, data: bytes):
        self.data = data or b"fresh"

    def serialize(self):
        return self.data + b"+tactics"


class FakeBuilderConfig:
    """IBuilderConfig's timing-cache calls: a cache from another GPU/TensorRT is refused with False."""

    def __init__(self, foreign_prefix: bytes = b"other-gpu"):
        self.foreign_prefix = foreign_prefix
        self.cache: FakeCache | None = None
        self.created: list[bytes] = []

    def create_timing_cache(self, data: bytes):
        self.created.append(data)
        if data.startswith(b"damaged"):
            raise RuntimeError("invalid timing cache blob")
        return FakeCache(data)

    def set_timing_cache(self, cache: FakeCache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # a foreign cache must be refused, never silently applied
        if cache.data.startswith(self.foreign_prefix):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


@pytest.mark.parametrize("stored", [b"other-gpu:tactics", b"damaged bytes"])
def test_a_rejected_timing_cache_is_replaced_by_a_fresh_one_with_a_warning(tmp_path, stored):
    path = tmp_path / "timing.cache"
    path.write_bytes(stored)
    config, warnings = FakeBuilderConfig(), []
    assert attach_timing_cache(config, path, warnings.append) is False
    assert config.created == [stored, b""] and config.cache is not None  # a fresh cache, not none at all
    assert len(warnings) == 1 and "starting a fresh one" in warnings[0] and str(path) in warnings[0]
    # after the (simulated) build the fresh cache replaces the rejected one instead of crashing on None
    assert save_timing_cache(config, path, warnings.append) and path.read_bytes() == b"fresh+tactics"


def test_an_accepted_timing_cache_is_reused_and_a_missing_one_started_silently(tmp_path):
    path = tmp_path / "timing.cache"
    config, warnings = FakeBuilderConfig(), []
    assert attach_timing_cache(config, path, warnings.append) is False and warnings == []
    path.write_bytes(b"this-gpu:tactics")
    config = FakeBuilderConfig()
    assert attach_timing_cache(config, path, warnings.append) is True and warnings == []
    assert config.cache.data == b"this-gpu:tactics"


def test_saving_without_a_timing_cache_warns_and_keeps_the_file(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"kept")
    warnings = []
    assert save_timing_cache(FakeBuilderConfig(), path, warnings.append) is False
    assert path.read_bytes() == b"kept" and "no timing cache" in warnings[0]


def test_timing_caches_are_kept_per_tensorrt_version_and_gpu():
    h100 = timing_cache_path(".cache/tensorrt/timing.cache", "10.7.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert str(h100) == ".cache/tensorrt/timing.trt10.7.0.nvidia-h100-80gb-hbm3.sm90.cache"
    others = {timing_cache_path(".cache/tensorrt/timing.cache", *key) for key in [
        ("10.8.0", "NVIDIA H100 80GB HBM3", "9.0"), ("10.7.0", "NVIDIA A100-SXM4-80GB", "8.0"),
        ("10.7.0", "NVIDIA L4", "8.9")]}
    assert h100 not in others and len(others) == 3


def feeds(seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, 100, size=(8, 16)).astype(np.int64)} for _ in range(3)]


def test_the_calibration_cache_is_keyed_by_the_onnx_file_and_the_calibration_data():
    template = ".cache/tensorrt/{model}.calibration.cache"
    old = calibration_cache_path(template, "textclf", "a" * 64, fingerprint_batches(feeds(0)))
    assert old.parent.as_posix() == ".cache/tensorrt" and old.name.startswith("textclf.calibration.onnx-aaaa")
    same = calibration_cache_path(template, "textclf", "a" * 64, fingerprint_batches(feeds(0)))
    retrained = calibration_cache_path(template, "textclf", "b" * 64, fingerprint_batches(feeds(0)))
    new_data = calibration_cache_path(template, "textclf", "a" * 64, fingerprint_batches(feeds(1)))
    assert same == old  # an unchanged model and data reuse their scales
    assert len({old, retrained, new_data}) == 3  # retrained weights or other data never reuse old scales


def test_the_data_fingerprint_sees_values_shapes_and_order():
    base = feeds(0)
    assert fingerprint_batches(base) == fingerprint_batches([dict(f) for f in base])
    changed = [dict(f) for f in base]
    changed[2] = {"input_ids": changed[2]["input_ids"].copy()}
    changed[2]["input_ids"][0, 0] += 1
    assert fingerprint_batches(changed) != fingerprint_batches(base)
    assert fingerprint_batches(base[::-1]) != fingerprint_batches(base)
    assert fingerprint_batches([{"input_ids": base[0]["input_ids"].reshape(16, 8)}]) != \
        fingerprint_batches([{"input_ids": base[0]["input_ids"]}])


def test_triton_is_started_with_version_compatibility_only_when_a_served_plan_needs_it(tmp_path):
    """Real: the launcher's command line (clients.serve.TritonServer.command) for a repository on disk."""
    import json

    from clients.serve import ServerConfig, TritonServer
    from builders.tensorrt_meta import version_compatible_plans

    version = tmp_path / "repo" / "textclf" / "3"
    version.mkdir(parents=True)
    (version / "model.plan").write_bytes(b"plan")
    meta = version / "model.plan.json"
    flag = "--backend-config=tensorrt,version-compatible=true"
    command = lambda: TritonServer(ServerConfig(repository=tmp_path / "repo")).command(token="t")  # noqa: E731
    meta.write_text(json.dumps({"version_compatible": False}))
    assert version_compatible_plans(tmp_path / "repo") == [] and flag not in command()
    meta.write_text(json.dumps({"version_compatible": True}))
    assert version_compatible_plans(tmp_path / "repo") == [version / "model.plan"] and flag in command()


def test_a_mixed_gpu_host_is_refused_when_any_visible_gpu_cannot_run_the_plan():
    """Real check (builders.tensorrt_meta.check_compatible) on a described host: one matching GPU is not enough,
    because Triton places the plan's instances on every visible GPU."""
    from builders.tensorrt_meta import HostInfo, PlanMetadata, check_compatible

    meta = PlanMetadata(tensorrt_version="10.7.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                        precision="fp16", profiles=[], inputs=[], outputs=[], onnx_sha256="a" * 64,
                        plan_sha256="b" * 64, workspace_mib=2048, optimization_level=3, built_at="2026-01-01")
    h100, l4 = ("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA L4", "8.9")
    assert check_compatible(meta, HostInfo("10.7.0", (h100, h100))) == []
    problems = check_compatible(meta, HostInfo("10.7.0", (h100, l4, h100)))
    assert len(problems) == 1 and "GPU 1 NVIDIA L4 (compute capability 8.9) cannot run it" in problems[0]
    assert "CUDA_VISIBLE_DEVICES=0,2" in problems[0]
    relaxed = meta.model_copy(update={"hardware_compatibility": "ampere_plus"})
    assert check_compatible(relaxed, HostInfo("10.7.0", (h100, l4))) == []
    assert "GPU 1 Tesla T4" in check_compatible(relaxed, HostInfo("10.7.0", (h100, ("Tesla T4", "7.5"))))[0]


def test_the_gpus_checked_are_the_ones_cuda_visible_devices_leaves_visible():
    from builders.tensorrt_meta import _visible

    assert _visible(None, 3, "GPU-abc")  # unset: every GPU
    assert _visible(["0", "2"], 2, "GPU-x") and not _visible(["0", "2"], 1, "GPU-x")
    assert _visible(["GPU-8f2a"], 5, "GPU-8f2a11-22") and not _visible(["GPU-8f2a"], 0, "GPU-1234")
    assert not _visible([], 0, "GPU-1234")  # set but empty: none
    assert _visible(["MIG-4f1c"], 0, "GPU-1234")  # MIG ids cannot be mapped to NVML devices: no narrowing
