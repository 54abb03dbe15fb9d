"""ONNX Runtime's CPU and GPU builds are alternatives, never installed on top of each other; the GPU image's pins
match its CUDA 12.6 (NGC 24.12); and whichever build is installed is reported.

Real: pyproject.toml, docker/requirements-ngc.txt and the Dockerfiles as committed, and this environment's ONNX
Runtime. Simulated (in the last test only): an environment with both builds, described to ``inspect_install``
through its two lookup functions, because installing both here would break this environment.
"""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from common.ort_install import DISTRIBUTIONS, inspect_install

ROOT = Path(__file__).resolve().parents[2]


def requirement_names(lines) -> list[str]:
    return [re.split(r"[\[<>=~!; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")]


def test_the_gpu_extra_does_not_install_a_second_onnx_runtime():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = requirement_names(project["dependencies"])
    gpu = requirement_names(project["optional-dependencies"]["gpu"])
    assert "onnxruntime" in base  # the CPU environment's build...
    assert not [name for name in gpu if name in DISTRIBUTIONS], f"the gpu extra adds {gpu} on top of onnxruntime"


def test_the_gpu_image_installs_exactly_one_onnx_runtime_built_for_its_cuda():
    pins = dict(re.match(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line).groups()
                for line in (ROOT / "docker" / "requirements-ngc.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert [name for name in pins if name in DISTRIBUTIONS] == ["onnxruntime-gpu"]
    major, minor = (int(p) for p in pins["onnxruntime-gpu"].split(".")[:2])
    assert (major, minor) <= (1, 26), "onnxruntime-gpu 1.27+ are CUDA 13 builds; NGC 24.12 is CUDA 12.6"
    assert pins["cuda-python"].startswith("12."), "cuda-python 13 needs driver >= 580; NGC 24.12 targets R560"
    dockerfile = (ROOT / "docker" / "ngc.Dockerfile").read_text()
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in dockerfile
    assert "python -m common.ort_install --expect onnxruntime-gpu" in dockerfile
    assert "python -m common.ort_install --expect onnxruntime" in (ROOT / "docker" / "cpu.Dockerfile").read_text()


def test_this_environment_reports_its_one_cpu_build_and_its_providers():
    install = inspect_install()
    assert install.distributions == {"onnxruntime": importlib.metadata.version("onnxruntime")}
    assert "CPUExecutionProvider" in install.providers and install.problems() == []
    done = subprocess.run([sys.executable, "-m", "common.ort_install", "--expect", "onnxruntime"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ONNX Runtime: onnxruntime ")
    wrong = subprocess.run([sys.executable, "-m", "common.ort_install", "--expect", "onnxruntime-gpu"], cwd=ROOT,
                           capture_output=True, text=True)
    assert wrong.returncode == 1 and "expected only onnxruntime-gpu, found onnxruntime" in wrong.stderr


def test_both_builds_installed_together_is_reported_as_the_problem_it_is():
    versions = {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.26.0"}

    def version_of(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    both = inspect_install(version_of, providers=lambda: ["CPUExecutionProvider"])
    problems = both.problems()
    assert any("installed together" in p and "pip uninstall -y onnxruntime onnxruntime-gpu" in p for p in problems)
    assert any("offers no CUDAExecutionProvider" in p for p in problems)
    assert "PROBLEM" in both.summary() and both.to_dict()["problems"] == problems
