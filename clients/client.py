"""The blocking client: one interface over Triton's HTTP and gRPC endpoints, with deadlines and retries.

::

    from clients import TritonClient

    with TritonClient("127.0.0.1:8001", protocol="grpc") as client:
        client.wait_until_ready(timeout=30, model="digits")
        result = client.infer("digits", images)          # images: float32 [n, 1, 8, 8]
        print(result.labels, result.scores)              # ["3", ...], [0.98, ...]
        client.infer("textclf_text", ["my parcel never arrived"]).labels
        vectors = client.embed("minilm_text", ["my parcel never arrived"]).embeddings   # float32 [1, 384]

One object keeps its connections (HTTP: a kept-alive pool per thread; gRPC: one channel) and its cache of model
metadata and configuration, so create it once and share it; it is safe to use from several threads. Every call is
bounded by ``retry.timeout_s`` per attempt and ``retry.budget_s`` in total and retried only on retryable failures
(see :class:`clients.settings.RetryPolicy`). Inputs are checked against the model before anything is sent.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterable

import numpy as np

from clients import embeddings as embedding_rules
from clients.core import ClientCore, PlannedRequest, build_config
from clients.errors import ClientError, DeadlineExceeded, ModelNotFound, ServerUnavailable
from clients.model_info import ModelInfo
from clients.results import InferenceResult
from clients.retry import observed, run_sync
from clients.settings import ClientConfig
from clients.transports.sync import open_sync_transport


class TritonClient:
    """Blocking client. ``TritonClient(url, protocol="http"|"grpc", config=ClientConfig(...), **fields)``."""

    def __init__(self, url: str | None = None, protocol: str | None = None, *, config: ClientConfig | None = None,
                 **settings: Any):
        self.config = build_config(url, protocol, config, settings)
        self._core = ClientCore(self.config)
        self._transport = open_sync_transport(self.config.protocol, self._core.url, self.config.connection,
                                              self.config.retry)
        self._closed = False

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def protocol(self) -> str:
        return self._core.protocol

    # -- health ---------------------------------------------------------------------------------------------------
    def _run(self, state, attempt):
        """One single-step call: retried per the policy, recorded in the latency histogram."""
        with observed(state):
            return run_sync(attempt, state)

    def _probe(self, what: str, call, timeout_s: float | None, model: str = "") -> bool:
        try:
            return bool(self._run(self._core.attempts(what, model, self._core.single_attempt_policy(timeout_s)), call))
        except (ServerUnavailable, ModelNotFound, DeadlineExceeded):
            return False

    def live(self, timeout_s: float | None = None) -> bool:
        """Whether the server process answers (``/v2/health/live``); False when it cannot be reached."""
        return self._probe("server live", self._transport.server_live, timeout_s)

    def ready(self, timeout_s: float | None = None) -> bool:
        """Whether the server is ready for inference (all its models loaded)."""
        return self._probe("server ready", self._transport.server_ready, timeout_s)

    def model_ready(self, model: str, version: str | None = None, timeout_s: float | None = None) -> bool:
        """Whether ``model`` (``version``, default the server's choice) is loaded and ready."""
        return self._probe("model ready", lambda d: self._transport.model_ready(model, version or "", d),
                           timeout_s, model)

    def health(self, model: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """Live, ready (and model ready) in one dictionary, for scripts and the ``health`` command."""
        report: dict[str, Any] = {"url": self.url, "protocol": self.protocol, "live": self.live(timeout_s)}
        report["ready"] = report["live"] and self.ready(timeout_s)
        if model:
            report["model"] = model
            report["model_ready"] = report["live"] and self.model_ready(model, timeout_s=timeout_s)
        return report

    def wait_until_ready(self, timeout: float, model: str | None = None, version: str | None = None,
                         interval_s: float = 0.25) -> float:
        """Block until the server (and ``model``) is ready; return the seconds waited.

        Raises :class:`ServerUnavailable` naming the URL when ``timeout`` passes first.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            left = deadline - time.monotonic()
            probe = max(0.05, min(self.config.retry.timeout_s, left))
            ready = self.ready(probe) and (model is None or self.model_ready(model, version, probe))
            if ready:
                return time.monotonic() - started
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"model '{model}' at " if model else ""
                state = "not live" if not self.live(0.5) else "live but not ready"
                raise ServerUnavailable(f"{what}{self.protocol}://{self.url} not ready within {timeout:g} s "
                                        f"(server {state})")
            time.sleep(min(interval_s, left))

    def server_version(self) -> str:
        return self._run(self._core.attempts("server metadata"), self._transport.server_version)

    def models(self) -> list[dict[str, str]]:
        """The repository index: name, version, state (READY, UNAVAILABLE...), reason."""
        return self._run(self._core.attempts("repository index"), self._transport.repository_index)

    # -- models ---------------------------------------------------------------------------------------------------
    def model_info(self, model: str, version: str | None = None) -> ModelInfo:
        """Inputs, outputs, batch limit and labels of ``model`` (fetched once per client, then cached)."""
        state = self._core.attempts("model metadata", model)
        with observed(state):
            return self._model_info(model, version or "", state)

    def _model_info(self, model: str, version: str, state) -> ModelInfo:
        cached = self._core.cached_info(model, version)
        if cached is not None:
            return cached
        try:
            state.step("model metadata")
            metadata = run_sync(lambda d: self._transport.model_metadata(model, version, d), state)
            state.step("model config")
            config = run_sync(lambda d: self._transport.model_config(model, version, d), state)
        except ModelNotFound:
            index = None
            with contextlib.suppress(ClientError):
                index = run_sync(self._transport.repository_index,
                                 self._core.attempts("repository index", policy=self._core.single_attempt_policy()))
            raise self._core.not_found(model, version, index) from None
        return self._core.remember_info(metadata, config, version)

    def model_config(self, model: str, version: str | None = None):
        """The model's configuration as Triton's ``ModelConfig`` protobuf message (not cached)."""
        return self._run(self._core.attempts("model config", model),
                         lambda d: self._transport.model_config(model, version or "", d))

    def forget(self, model: str | None = None) -> None:
        """Drop cached model information so the next call reads it again."""
        self._core.forget(model)

    # -- inference ------------------------------------------------------------------------------------------------
    def infer(self, model: str, inputs: Any, version: str | None = None, outputs: Iterable[str] | None = None
              ) -> InferenceResult:
        """Run ``model`` on ``inputs`` (an array, a mapping of input name to array, or text; see
        :mod:`clients.inputs`) and return labels, scores and every requested output as numpy arrays.

        Reading the model's metadata (first call only) and the inference share one budget and one attempt count.
        """
        state = self._core.attempts("infer", model)
        with observed(state):
            info = self._model_info(model, version or "", state)
            plan = self._core.plan(info, inputs, outputs)
            state.step("infer")
            got = run_sync(lambda deadline: self._attempt(plan, deadline), state)
        return self._core.result(plan, got, state)

    def embed(self, model: str, texts: str | Iterable[str], version: str | None = None,
              batch_size: int | None = None) -> InferenceResult:
        """Embed ``texts`` with ``model``; the vectors are ``result.embeddings`` (float32 ``[len(texts), dims]``).

        ``model`` is a text ensemble (``minilm_text``), or an encoder that takes token ids (``minilm``) when the
        client was given the model's ``tokenizer.json`` (``tokenizer=...``). Texts are sent in requests of at most
        ``batch_size`` (and never more than the model's ``max_batch_size``), one after the other; each request has
        its own deadline and retries, and the answers are joined in order (see :mod:`clients.embeddings`).
        """
        started = time.monotonic()
        info = self.model_info(model, version)
        output, requests = self._core.embed_requests(info, texts, batch_size)
        results = [self.infer(model, request, version, outputs=[output]) for request in requests]
        return embedding_rules.join(results, output, time.monotonic() - started)

    def _attempt(self, plan: PlannedRequest, deadline: float) -> dict[str, np.ndarray]:
        info = plan.info
        timeout_us = self._core.server_timeout_us(info, deadline)
        lease = self._core.lease(plan)
        if lease is None:
            got, _ = self._transport.infer(info.name, info.version, plan.arrays, plan.outputs, None, deadline, timeout_us)
            return self._core.merge_outputs(plan, got, {})
        try:
            self._sync_regions(lease, deadline)
            try:
                got, shapes = self._transport.infer(info.name, info.version, plan.arrays, plan.outputs,
                                                    lease.binding, deadline, timeout_us)
            except Exception as exc:
                self._core.check_regions(exc)
                raise
            return self._core.merge_outputs(plan, got, self._core.shm.read_outputs(lease, shapes))
        finally:
            self._core.shm.release(lease)

    def _sync_regions(self, lease, deadline: float) -> None:
        """Retire the regions this lease outgrew, register its new ones with the server."""
        core = self._core
        for region in lease.retired:
            with contextlib.suppress(Exception):  # best effort: a retired region is never named again
                method, args = core.unregister_call(region)
                getattr(self._transport, method)(*args, deadline)
            core.shm.destroy(region)
        lease.retired.clear()
        for region in lease.unregistered():
            method, args = core.register_call(region)
            try:
                getattr(self._transport, method)(*args, deadline)
            except Exception as exc:
                if not core.registered_anyway(exc):
                    raise
            region.registered = True

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Unregister and free shared memory, close connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        pool = self._core.shm
        if pool is not None:
            for region in pool.close():
                if region.registered:
                    # the server may be gone, and its registrations with it
                    with contextlib.suppress(Exception):
                        method, args = self._core.unregister_call(region)
                        getattr(self._transport, method)(*args, min(2.0, self.config.retry.timeout_s))
                pool.destroy(region)
        self._transport.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonClient({self.url!r}, protocol={self.protocol!r})"
