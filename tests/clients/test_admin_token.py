"""Against the real Triton with its admin APIs restricted (as the compose stack and an exposed ``clients serve`` run
it): the client sends the admin token on the restricted calls, in the header each protocol expects.

Triton is started by :class:`clients.serve.TritonServer` with ``$TRITON_ADMIN_TOKEN`` set, so it restricts
model-repository, shared-memory, trace and logging. Over HTTP it wants ``triton-admin-token``; over gRPC the metadata
key ``triton-grpc-protocol-triton-admin-token``. Nothing is simulated here.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from clients import AsyncTritonClient, TritonClient
from clients.errors import ClientError
from clients.serve import ADMIN_TOKEN_ENV, TritonServer
from clients.settings import ConnectionSettings
from tests.clients.conftest import server_config, url_for

pytestmark = pytest.mark.slow
TOKEN = "admin-s3cret"
FEATURES = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    """A Triton whose restricted APIs need TOKEN; the variable is removed again once the server runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_TOKEN_ENV, TOKEN)
        server = TritonServer(server_config(tmp_path_factory.mktemp("restricted"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)


def registered_regions(server: TritonServer, protocol: str) -> int:
    """Regions Triton holds, asked with the raw tritonclient and the right header (the status API is restricted too)."""
    if protocol == "grpc":
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        status = raw.get_system_shared_memory_status(headers={"triton-grpc-protocol-triton-admin-token": TOKEN})
        count = len(status.regions)
    else:
        raw = httpclient.InferenceServerClient(server.http_url)
        count = len(raw.get_system_shared_memory_status(headers={"triton-admin-token": TOKEN}))
    raw.close()
    return count


def test_the_server_really_refuses_restricted_calls_without_the_token(restricted, protocol):
    with TritonClient(url_for(restricted, protocol), protocol) as client:
        with pytest.raises(ClientError, match="restricted"):
            client.models()
        with TritonClient(url_for(restricted, protocol), protocol, shared_memory="system") as shm_client:
            with pytest.raises(ClientError, match="restricted"):
                shm_client.infer("toy", FEATURES)
        # inference itself is not restricted and needs no token
        assert client.infer("toy", FEATURES).outputs["probabilities"].shape == (4, 3)


@pytest.mark.parametrize("source", ["settings", "environment"])
def test_the_sync_client_sends_the_token_for_the_index_and_shared_memory(restricted, protocol, source, monkeypatch):
    settings = {}
    if source == "settings":
        settings["connection"] = ConnectionSettings(admin_token=TOKEN)
    else:
        monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    url = url_for(restricted, protocol)
    with TritonClient(url, protocol, **settings) as client:
        names = {m["name"] for m in client.models()}
        assert {"toy", "text"} <= names
    before = registered_regions(restricted, protocol)
    with TritonClient(url, protocol, shared_memory="system", **settings) as client:
        plain = TritonClient(url, protocol).infer("toy", FEATURES)
        via_shm = client.infer("toy", FEATURES)
        np.testing.assert_array_equal(via_shm.outputs["probabilities"], plain.outputs["probabilities"])
        assert registered_regions(restricted, protocol) > before  # registered with the token...
    assert registered_regions(restricted, protocol) == before  # ...and unregistered with it on close


def test_the_async_client_sends_the_token_for_the_index_and_shared_memory(restricted, protocol):
    url = url_for(restricted, protocol)
    connection = ConnectionSettings(admin_token=TOKEN)

    async def run():
        async with AsyncTritonClient(url, protocol, connection=connection, shared_memory="system") as client:
            names = {m["name"] for m in await client.models()}
            result = await client.infer("toy", FEATURES)
            return names, result, registered_regions(restricted, protocol)

    before = registered_regions(restricted, protocol)
    names, result, during = asyncio.run(run())
    assert {"toy", "text"} <= names and result.outputs["probabilities"].shape == (4, 3)
    assert during > before and registered_regions(restricted, protocol) == before


def test_the_token_travels_in_the_header_each_protocol_expects():
    from clients.transports.adapters import GrpcAdapter, HttpAdapter

    assert HttpAdapter().admin_kwargs(TOKEN) == {"headers": {"triton-admin-token": TOKEN}}
    assert GrpcAdapter().admin_kwargs(TOKEN) == {"headers": {"triton-grpc-protocol-triton-admin-token": TOKEN}}
    assert HttpAdapter().admin_kwargs(None) == {} and GrpcAdapter().admin_kwargs("") == {}
    assert "s3cret" not in repr(ConnectionSettings(admin_token=TOKEN))  # a secret never shows in logs or reprs
