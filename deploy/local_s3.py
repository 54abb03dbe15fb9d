"""An S3-compatible server on loopback for local runs and tests: moto in server mode (PyPI ``moto[server]``).

No MinIO or other S3 server is packaged in Debian here; moto speaks the S3 API over HTTP, which is what Triton's S3
file system and boto3 need. Credentials are dummies moto accepts; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from common.errors import UserError
from common.net import free_port, wait_http_ok


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

@contextlib.contextmanager
def moto_server(log: Path, enforce_auth_after: int | None = None) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields its host:port. Stopped (only the process we started) on exit.

    ``enforce_auth_after``: moto checks IAM permissions after that many requests (the ones before set up users and
    policies), so credentials that may read but not write can be tried."""
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.is_file():
        raise UserError(f"{binary} is missing; install moto's server (pip install 'moto[server]')")
    with open(log, "wb") as out:
        env = dict(os.environ)
        if enforce_auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(enforce_auth_after)
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        if not wait_http_ok(f"http://127.0.0.1:{port}/moto-api/", timeout=30):
            raise UserError(f"moto_server did not start on port {port}: {log.read_text()[-500:]}")
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
