"""The build environment recorded in every lineage: library versions, interpreter, host, code version.

A plan or a quantized file is only reproducible with the same toolchain, so the lineage says which one built it.
"""
from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path

from common.environment import package_versions

_PACKAGES = ("torch", "onnx", "onnxscript", "onnxslim", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tokenizers",
             "transformers", "sentence-transformers", "tritonclient", "nvidia-pytriton", "numpy")
REPO_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """The git commit of this checkout (``+dirty`` when it has uncommitted changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def build_environment() -> dict:
    return {
        "packages": package_versions(_PACKAGES),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "code_version": code_version(),
    }
