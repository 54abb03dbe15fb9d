"""Triton's real reason for failing to start, in one line, from its log.

Triton logs a harmless error on every CPU-only start ("CudaDriverHelper has not been initialized."), and a python-backend
model that cannot load appends a Python stack to its message (``\\n\\nAt:\\n  model.py(1): <module>...``, escaped inside
one log line). The launcher reports the first line that explains the failure: a model that failed to load, a model
folder Triton could not read, a service that could not start, then any other error that is not a known CPU warning;
each cut to its first line.
"""
from __future__ import annotations

import re

_LOAD_ERROR = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*?)\"?$")
_POLL_ERROR = re.compile(r"Poll failed for model directory '(?P<dir>[^']+)': (?P<reason>.*?)\"?$")
_SERVICE_ERROR = re.compile(r"failed to start (?P<what>\w+) service: (?P<reason>.*?)\"?$")
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] (?P<message>.*)$")
# errors Triton logs on a healthy CPU-only start: never the reason it stopped
HARMLESS = ("CudaDriverHelper has not been initialized", "CUDA driver version is insufficient",
            "unable to create stream for", "Failed to initialize NVML", "DCGM", "pinned memory")


def first_line(message: str) -> str:
    """A message without the Python stack Triton appends (escaped ``\\n`` inside a log line, or real newlines)."""
    message = message.replace("\\n", "\n").strip().strip('"')
    return message.splitlines()[0].strip() if message else message


def first_error(log_text: str) -> str | None:
    """The most useful single line from a Triton log that ended in failure (None when the log names nothing)."""
    lines = log_text.splitlines()
    for line in lines:
        match = _LOAD_ERROR.search(line)
        if match:
            return (f"Triton failed to load model '{match['model']}' version {match['version']}: "
                    f"{first_line(match['reason'])}")
    for line in lines:
        match = _POLL_ERROR.search(line)
        if match:
            return f"Triton could not read the model folder '{match['dir']}': {first_line(match['reason'])}"
    for line in lines:
        match = _SERVICE_ERROR.search(line)
        if match:
            return f"Triton failed to start its {match['what']} service: {first_line(match['reason'])}"
    for line in lines:
        match = _ERROR_LINE.match(line)
        if match and not any(marker in line for marker in HARMLESS):
            return "Triton: " + first_line(match["message"])
    return None
