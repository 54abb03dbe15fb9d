"""The asyncio client: :class:`clients.client.TritonClient`'s interface as coroutines.

::

    from clients import AsyncTritonClient

    async with AsyncTritonClient("127.0.0.1:8001", protocol="grpc") as client:
        await client.wait_until_ready(timeout=30, model="digits")
        results = await asyncio.gather(*(client.infer("digits", batch) for batch in batches))
        vectors = (await client.embed("minilm_text", texts)).embeddings   # float32 [len(texts), 384]

One object serves any number of concurrent tasks of its event loop: HTTP keeps a pool of kept-alive connections
(``connection.http_pool_size``), gRPC multiplexes over one channel. Deadlines, retries, validation and results are
exactly those of the blocking client (both build on :mod:`clients.core` and :mod:`clients.retry`).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Iterable

import numpy as np

from clients import embeddings as embedding_rules
from clients.core import ClientCore, PlannedRequest, build_config
from clients.errors import ClientError, DeadlineExceeded, ModelNotFound, ServerUnavailable
from clients.model_info import ModelInfo
from clients.results import InferenceResult
from clients.retry import observed, run_async
from clients.settings import ClientConfig
from clients.transports.aio import AsyncTransport


class AsyncTritonClient:
    """asyncio client. ``AsyncTritonClient(url, protocol="http"|"grpc", config=ClientConfig(...), **fields)``."""

    def __init__(self, url: str | None = None, protocol: str | None = None, *, config: ClientConfig | None = None,
                 **settings: Any):
        self.config = build_config(url, protocol, config, settings)
        self._core = ClientCore(self.config)
        self._transport = AsyncTransport(self.config.protocol, self._core.url, self.config.connection,
                                         self.config.retry)
        self._closed = False

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def protocol(self) -> str:
        return self._core.protocol

    # -- health ---------------------------------------------------------------------------------------------------
    async def _run(self, state, attempt):
        with observed(state):
            return await run_async(attempt, state)

    async def _probe(self, what: str, call, timeout_s: float | None, model: str = "") -> bool:
        try:
            state = self._core.attempts(what, model, self._core.single_attempt_policy(timeout_s))
            return bool(await self._run(state, call))
        except (ServerUnavailable, ModelNotFound, DeadlineExceeded):
            return False

    async def live(self, timeout_s: float | None = None) -> bool:
        return await self._probe("server live", self._transport.server_live, timeout_s)

    async def ready(self, timeout_s: float | None = None) -> bool:
        return await self._probe("server ready", self._transport.server_ready, timeout_s)

    async def model_ready(self, model: str, version: str | None = None, timeout_s: float | None = None) -> bool:
        return await self._probe("model ready", lambda d: self._transport.model_ready(model, version or "", d),
                                 timeout_s, model)

    async def health(self, model: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        report: dict[str, Any] = {"url": self.url, "protocol": self.protocol, "live": await self.live(timeout_s)}
        report["ready"] = report["live"] and await self.ready(timeout_s)
        if model:
            report["model"] = model
            report["model_ready"] = report["live"] and await self.model_ready(model, timeout_s=timeout_s)
        return report

    async def wait_until_ready(self, timeout: float, model: str | None = None, version: str | None = None,
                               interval_s: float = 0.25) -> float:
        """Wait until the server (and ``model``) is ready; :class:`ServerUnavailable` naming the URL otherwise."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            left = deadline - time.monotonic()
            probe = max(0.05, min(self.config.retry.timeout_s, left))
            if await self.ready(probe) and (model is None or await self.model_ready(model, version, probe)):
                return time.monotonic() - started
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"model '{model}' at " if model else ""
                state = "not live" if not await self.live(0.5) else "live but not ready"
                raise ServerUnavailable(f"{what}{self.protocol}://{self.url} not ready within {timeout:g} s "
                                        f"(server {state})")
            await asyncio.sleep(min(interval_s, left))

    async def server_version(self) -> str:
        return await self._run(self._core.attempts("server metadata"), self._transport.server_version)

    async def models(self) -> list[dict[str, str]]:
        return await self._run(self._core.attempts("repository index"), self._transport.repository_index)

    # -- models ---------------------------------------------------------------------------------------------------
    async def model_info(self, model: str, version: str | None = None) -> ModelInfo:
        state = self._core.attempts("model metadata", model)
        with observed(state):
            return await self._model_info(model, version or "", state)

    async def _model_info(self, model: str, version: str, state) -> ModelInfo:
        cached = self._core.cached_info(model, version)
        if cached is not None:
            return cached
        try:
            state.step("model metadata")
            metadata = await run_async(lambda d: self._transport.model_metadata(model, version, d), state)
            state.step("model config")
            config = await run_async(lambda d: self._transport.model_config(model, version, d), state)
        except ModelNotFound:
            index = None
            with contextlib.suppress(ClientError):
                index = await run_async(self._transport.repository_index,
                                        self._core.attempts("repository index",
                                                            policy=self._core.single_attempt_policy()))
            raise self._core.not_found(model, version, index) from None
        return self._core.remember_info(metadata, config, version)

    async def model_config(self, model: str, version: str | None = None):
        return await self._run(self._core.attempts("model config", model),
                               lambda d: self._transport.model_config(model, version or "", d))

    def forget(self, model: str | None = None) -> None:
        self._core.forget(model)

    # -- inference ------------------------------------------------------------------------------------------------
    async def infer(self, model: str, inputs: Any, version: str | None = None, outputs: Iterable[str] | None = None
                    ) -> InferenceResult:
        """See :meth:`clients.client.TritonClient.infer`."""
        state = self._core.attempts("infer", model)
        with observed(state):
            info = await self._model_info(model, version or "", state)
            plan = self._core.plan(info, inputs, outputs)
            state.step("infer")
            got = await run_async(lambda deadline: self._attempt(plan, deadline), state)
        return self._core.result(plan, got, state)

    async def embed(self, model: str, texts: str | Iterable[str], version: str | None = None,
                    batch_size: int | None = None) -> InferenceResult:
        """See :meth:`clients.client.TritonClient.embed`; the requests of one call are in flight together, so the
        server can batch them."""
        started = time.monotonic()
        info = await self.model_info(model, version)
        output, requests = self._core.embed_requests(info, texts, batch_size)
        results = await asyncio.gather(*(self.infer(model, request, version, outputs=[output]) for request in requests))
        return embedding_rules.join(list(results), output, time.monotonic() - started)

    async def _attempt(self, plan: PlannedRequest, deadline: float) -> dict[str, np.ndarray]:
        info = plan.info
        timeout_us = self._core.server_timeout_us(info, deadline)
        lease = self._core.lease(plan)
        if lease is None:
            got, _ = await self._transport.infer(info.name, info.version, plan.arrays, plan.outputs, None, deadline,
                                                 timeout_us)
            return self._core.merge_outputs(plan, got, {})
        try:
            await self._sync_regions(lease, deadline)
            try:
                got, shapes = await self._transport.infer(info.name, info.version, plan.arrays, plan.outputs,
                                                          lease.binding, deadline, timeout_us)
            except Exception as exc:
                self._core.check_regions(exc)
                raise
            return self._core.merge_outputs(plan, got, self._core.shm.read_outputs(lease, shapes))
        finally:
            self._core.shm.release(lease)

    async def _sync_regions(self, lease, deadline: float) -> None:
        core = self._core
        for region in lease.retired:
            with contextlib.suppress(Exception):
                method, args = core.unregister_call(region)
                await getattr(self._transport, method)(*args, deadline)
            core.shm.destroy(region)
        lease.retired.clear()
        for region in lease.unregistered():
            method, args = core.register_call(region)
            try:
                await getattr(self._transport, method)(*args, deadline)
            except Exception as exc:
                if not core.registered_anyway(exc):
                    raise
            region.registered = True

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool = self._core.shm
        if pool is not None:
            for region in pool.close():
                if region.registered:
                    with contextlib.suppress(Exception):
                        method, args = self._core.unregister_call(region)
                        timeout = min(2.0, self.config.retry.timeout_s)
                        async with asyncio.timeout(timeout):
                            await getattr(self._transport, method)(*args, timeout)
                pool.destroy(region)
        await self._transport.close()

    async def __aenter__(self) -> "AsyncTritonClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncTritonClient({self.url!r}, protocol={self.protocol!r})"
