"""asyncio transports over ``tritonclient.http.aio`` (aiohttp) and ``tritonclient.grpc.aio`` (grpc.aio).

One underlying client per transport, shared by every task of the event loop: aiohttp keeps a pool of kept-alive
connections (``http_pool_size``), grpc.aio multiplexes calls over one HTTP/2 channel. Deadlines are enforced by the
retry runner with ``asyncio.timeout`` (cancellation closes the aiohttp connection or cancels the RPC); gRPC also sends
the deadline to the server. The underlying client is created on first use, inside the running loop, because both
aiohttp sessions and grpc.aio channels belong to the loop that created them.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
# imported here, not on first use: a first call must not spend its deadline importing aiohttp or grpc.aio
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio

from clients.settings import ConnectionSettings, RetryPolicy
from clients.transports.adapters import GrpcAdapter, HttpAdapter, ShmBinding, grpc_channel_args, read_outputs


def _consume(task: "asyncio.Future") -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


class AsyncTransport:
    """Same operations as :class:`clients.transports.sync.SyncTransport`, as coroutines."""

    def __init__(self, protocol: str, url: str, connection: ConnectionSettings, policy: RetryPolicy):
        self.adapter: HttpAdapter = GrpcAdapter() if protocol == "grpc" else HttpAdapter()
        self.url = url
        self.connection = connection
        self.policy = policy
        self._underlying = None

    @property
    def _admin(self) -> dict:
        """The admin-token header for restricted APIs (inference never carries it), resolved per call: a local
        server restarted on the same port has a new per-start token, and a cached old one would be refused."""
        return self.adapter.admin_kwargs(self.connection.resolved_admin_token(self.url))

    @property
    def protocol(self) -> str:
        return self.adapter.protocol

    def _client(self):
        if self._underlying is None:
            if self.protocol == "grpc":
                self._underlying = grpc_aio.InferenceServerClient(self.url, channel_args=grpc_channel_args(self.connection))
            else:
                # aiohttp's total timeout only backs up the per-call deadline of the retry runner
                self._underlying = http_aio.InferenceServerClient(
                    self.url, conn_limit=self.connection.http_pool_size, conn_timeout=self.policy.timeout_s + 1.0)
        return self._underlying

    async def _call(self, deadline: float, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self._client(), method)(*args, **kwargs, **self.adapter.deadline_kwargs(deadline))

    async def server_live(self, deadline: float) -> bool:
        return bool(await self._call(deadline, "is_server_live"))

    async def server_ready(self, deadline: float) -> bool:
        return bool(await self._call(deadline, "is_server_ready"))

    async def model_ready(self, model: str, version: str, deadline: float) -> bool:
        return bool(await self._call(deadline, "is_model_ready", model, version))

    async def server_version(self, deadline: float) -> str:
        return self.adapter.server_version(await self._call(deadline, "get_server_metadata"))

    async def model_metadata(self, model: str, version: str, deadline: float):
        return self.adapter.metadata(await self._call(deadline, "get_model_metadata", model, version))

    async def model_config(self, model: str, version: str, deadline: float):
        return self.adapter.config(await self._call(deadline, "get_model_config", model, version))

    async def repository_index(self, deadline: float) -> list[dict[str, str]]:
        return self.adapter.index(await self._call(deadline, "get_model_repository_index", **self._admin))

    async def infer(self, model: str, version: str, arrays: dict[str, np.ndarray], outputs: list[str],
                    binding: ShmBinding | None, deadline: float, server_timeout_us: int | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
        infer_inputs, requested = self.adapter.request(arrays, outputs, binding)
        extra = {"timeout": server_timeout_us} if server_timeout_us else {}
        # the attempt's deadline travels to the server too: the CPU runtimes drop requests that reach them after it
        # (Triton 2.51 cannot bound their queues; see builders/runtime/onnx_model.py)
        extra["parameters"] = {"deadline_unix_ms": int((time.time() + deadline) * 1000)}
        call = self._client().infer(model, infer_inputs, model_version=version, outputs=requested, **extra,
                                    **self.adapter.infer_deadline_kwargs(deadline))
        if self.protocol != "grpc":
            result = await call
        else:
            # the retry runner cancels this coroutine at the deadline; the RPC itself is shielded and left to the
            # server, which answers a late request at once (see clients.transports.adapters.GRPC_INFER_GRACE_S)
            task = asyncio.ensure_future(call)
            task.add_done_callback(_consume)
            result = await asyncio.shield(task)
        return read_outputs(self.adapter, result, outputs, binding)

    async def register_system_shm(self, name: str, key: str, byte_size: int, deadline: float) -> None:
        await self._call(deadline, "register_system_shared_memory", name, key, byte_size, **self._admin)

    async def unregister_system_shm(self, name: str, deadline: float) -> None:
        await self._call(deadline, "unregister_system_shared_memory", name, **self._admin)

    async def register_cuda_shm(self, name: str, raw_handle: bytes, device_id: int, byte_size: int,
                                deadline: float) -> None:
        await self._call(deadline, "register_cuda_shared_memory", name, raw_handle, device_id, byte_size,
                         **self._admin)

    async def unregister_cuda_shm(self, name: str, deadline: float) -> None:
        await self._call(deadline, "unregister_cuda_shared_memory", name, **self._admin)

    async def close(self) -> None:
        client, self._underlying = self._underlying, None
        if client is not None:
            await client.close()
