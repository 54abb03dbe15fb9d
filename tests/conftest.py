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
