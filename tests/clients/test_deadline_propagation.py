"""The client library's per-attempt deadline reaches the server's CPU runtimes (issue 17, item 14): Triton 2.51 cannot
bound python-backend queues without stalling, so the runtimes drop requests that reach them after their client's
deadline (request parameter ``deadline_unix_ms``). Against the real Triton with the builders' runtimes."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from clients import TritonClient
from clients.errors import ClientError
from clients.serve import ServerConfig, TritonServer
from common.net import free_port
from tests.builders.test_runtime_validation import build_repository

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("deadline")
    config = ServerConfig(repository=build_repository(root), http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=root / "triton.log", exit_timeout_s=1,
                          ready_timeout_s=90, admin_token_dir=root / "tokens")
    with TritonServer(config) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_attempt_deadline_travels_to_the_runtimes(served, protocol, monkeypatch):
    url = served.grpc_url if protocol == "grpc" else served.http_url
    ids = np.array([[2, 3, 4]], dtype=np.int64)
    with TritonClient(url, protocol, retry={"max_attempts": 2, "timeout_s": 5, "budget_s": 10}) as client:
        assert client.infer("tok", ids).outputs["probabilities"].shape == (1, 3)  # in time: answered
        assert client.infer("tok_text", ["hello world"]).labels[0] in ("a", "b", "c")
        # a client clock an hour behind (in the transport only: gRPC's own deadline stays right) sends a deadline
        # that has passed when the request arrives
        import clients.transports.sync as transport

        monkeypatch.setattr(transport, "time", SimpleNamespace(time=lambda: time.time() - 3600))
        for model, inputs in (("tok", ids), ("tok_text", ["hello world"])):
            with pytest.raises(ClientError, match="overloaded.*request timeout expired: the client's deadline passed"):
                client.infer(model, inputs)
