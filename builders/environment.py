"""The build environment recorded in every lineage: library versions, interpreter, host, code version.

A plan or a quantized file is only reproducible with the same toolchain, so the lineage says which one built it.
"""
from __future__ import annotations

import platform
import socket
import sys

from common.environment import code_version, package_versions

_PACKAGES = ("torch", "onnx", "onnxscript", "onnxslim", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tokenizers",
             "transformers", "sentence-transformers", "tritonclient", "nvidia-pytriton", "numpy")


def build_environment() -> dict:
    return {
        "packages": package_versions(_PACKAGES),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "code_version": code_version(),
    }
