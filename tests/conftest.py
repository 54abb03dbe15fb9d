"""Shared test configuration.

Tests that need CUDA or TensorRT carry ``@pytest.mark.gpu`` / ``@pytest.mark.tensorrt``; on a machine without them they
are skipped with the reason, so a CPU-only CI run reports exactly what it could not check.
"""
from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # torch missing or broken: no CUDA either way
        return False


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (runs on the GPU host / NGC image)")
    skip_trt = pytest.mark.skip(
        reason="needs the TensorRT Python package, which only exists in the GPU images (NGC TensorRT/Triton containers)"
    )
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def lean_runs(tmp_path_factory) -> dict:
    """A digits and a small textclf training run: a few dozen optimizer steps (enough to separate classes), then the
    real export. Shared by every test package that needs served models, so CI trains them once."""
    from tests.builders.trainer import DIGITS_ARCH, TEXTCLF_ARCH, train_run

    root = tmp_path_factory.mktemp("lean-runs")
    return {
        "digits": train_run(root / "digits", "digits", DIGITS_ARCH, {}, steps=60),
        "textclf": train_run(root / "textclf", "textclf", TEXTCLF_ARCH,
                             {"train_size": 600, "val_size": 100, "test_size": 100}, steps=40),
    }


@pytest.fixture(scope="session")
def lean_repository(lean_runs, tmp_path_factory):
    """``python -m builders build`` of both lean runs with lean settings (no INT8, no TensorRT): a read-only
    repository with digits and the textclf family (textclf_text takes raw strings). Copy it before changing it."""
    from builders.pipeline import BuildRequest, build
    from builders.settings import BuildConfig

    root = tmp_path_factory.mktemp("lean-built")
    settings = BuildConfig.model_validate({
        "publish": {"work_dir": str(root / "builds")}, "quantize": {"enabled": False}, "tensorrt": {"mode": "off"},
        "parity": {"samples": 64}})
    for run in lean_runs.values():
        build(BuildRequest(run_dir=run, repository=root / "model_repository", settings=settings, quiet=True))
    return root / "model_repository"
