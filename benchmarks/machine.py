"""Facts about the machine and software a figure was measured on, recorded beside every result.

Figures from a shared 2-core machine vary by tens of percent between runs, so every results file says where it came
from, and comparisons are made between configurations measured in the same run.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform

from common.environment import package_versions

PACKAGES = ("torch", "onnxruntime", "onnx", "tritonclient", "nvidia-pytriton", "locust", "numpy", "tensorrt")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                    for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver / no NVML: a CPU machine
        return []


def machine_facts() -> dict:
    import psutil

    return {
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpu_names(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": package_versions(PACKAGES),
    }
