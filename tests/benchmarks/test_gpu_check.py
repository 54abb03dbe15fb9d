"""``python -m benchmarks gpu-check`` runs on this CPU machine: every GPU row is SKIP with its reason, the table is
printed and the JSON written. Nothing is simulated: the real command runs as a user runs it (on a GPU host the same
rows PASS or FAIL with their figures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_SECTIONS = {"training", "nccl", "nvml", "build", "tensorrt", "inference", "tests"}


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the GPU rows run here instead of being skipped")
    output = tmp_path_factory.mktemp("gpu-check") / "gpu-check.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "gpu-check", "--output", str(output)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return done, json.loads(output.read_text())


def test_every_gpu_row_is_skipped_with_the_reason(cpu_run):
    done, result = cpu_run
    assert done.returncode == 0, done.stderr
    rows = result["rows"]
    assert {row["section"] for row in rows} >= GPU_SECTIONS
    gpu_rows = [row for row in rows if row["section"] in GPU_SECTIONS]
    assert len(gpu_rows) >= 25  # 4 training, 3 NCCL, 1 NVML, 2 builds, 8 TensorRT, 6 inference, the GPU tests
    for row in gpu_rows:
        assert row["status"] == "SKIP", row
        assert row["detail"].startswith("no CUDA GPU: torch.cuda.is_available() is False"), row
    assert result["summary"] == {"PASS": 0, "FAIL": 0, "SKIP": len(rows)}
    names = {row["name"] for row in rows}
    for expected in ("train digits --amp fp16: loss finite, kill -9 + resume exact",
                     "train textclf --amp bf16: loss finite, kill -9 + resume exact",
                     "NCCL 2 processes on one GPU: all-reduce + DDP step",
                     "NVML exporter: one scrape has every GPU's readings",
                     "TensorRT textclf: engine parity vs ONNX Runtime",
                     "TensorRT: a version-compatible plan loads with engine_host_code_allowed",
                     "infer textclf: ONNX Runtime CUDAExecutionProvider", "infer digits: torch.compile CUDA"):
        assert expected in names


def test_the_table_and_the_environment_are_reported(cpu_run):
    done, result = cpu_run
    lines = done.stdout.splitlines()
    assert lines[-2] == f"0 passed, 0 failed, {len(result['rows'])} skipped"
    assert lines[-1].startswith("wrote ") and lines[-1].endswith("s)")
    assert sum(line.startswith("SKIP  ") for line in lines) == len(result["rows"])
    environment = next(row for row in result["rows"] if row["section"] == "environment")
    assert environment["figures"]["cuda_available"] is False
    assert environment["figures"]["onnxruntime"].startswith("ONNX Runtime: onnxruntime ")
    assert result["seconds"] < 60 and result["budget_s"] == 450
