"""Fixtures for the client tests: the real Triton serving the hand-written python-backend models under
``fixture_repository/`` (toy: FP32 classifier; text: strings in, labels out; guard: fails on purpose; slow: sleeps).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clients.serve import ServerConfig, TritonServer
from common.net import free_port

FIXTURE_REPOSITORY = Path(__file__).parent / "fixture_repository"
REPO_ROOT = Path(__file__).resolve().parents[2]


def server_config(tmp_path: Path, http_port: int | None = None, grpc_port: int | None = None,
                  repository: Path = FIXTURE_REPOSITORY) -> ServerConfig:
    return ServerConfig(repository=repository, http_port=http_port or free_port(), grpc_port=grpc_port or free_port(),
                        metrics_port=free_port(), log_file=tmp_path / "triton.log", exit_timeout_s=1,
                        ready_timeout_s=60)


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """One real Triton for the whole session (about a second to start on CPU)."""
    with TritonServer(server_config(tmp_path_factory.mktemp("triton"))) as server:
        yield server


@pytest.fixture(params=["http", "grpc"])
def protocol(request) -> str:
    return request.param


def url_for(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def run_clients_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m clients ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "clients", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
