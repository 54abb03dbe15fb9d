"""Real parts for the object-store tests: moto's S3 server on loopback and a tiny two-model package.

The package is a python-backend model ``answer`` whose output is the version number it was published as (so a test
sees which version a Triton serves) plus a second, never-requested model ``idle``, so the repository has several
models loaded, as a production one does.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from common.net import free_port, wait_http_ok

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

MODEL_PY = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.answer = np.float32({value})

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = np.full(x.shape, self.answer, dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return out
'''

CONFIG = '''name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ latest {{ num_versions: 1 }} }}
'''


def make_package(root: Path, answer: float) -> Path:
    """A build package (builders.repository layout) whose ``answer`` model returns ``answer``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("idle", "answer"):
        (root / name / "version").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (root / name / "version" / "model.py").write_text(MODEL_PY.format(value=answer))
    (root / "package.json").write_text(json.dumps({"primary": "answer", "members": ["idle", "answer"]}))
    return root


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields its host:port. Stopped (only the process we started) on exit."""
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_http_ok(f"http://127.0.0.1:{port}/moto-api/", timeout=30):
            raise RuntimeError(f"moto_server did not start on port {port}: {log.read_text()[-500:]}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def aws_credentials() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=bucket)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
