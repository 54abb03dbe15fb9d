"""What the synchronous and the asyncio client share: configuration, caches, request planning, result building.

Everything here is free of I/O, so :class:`clients.client.TritonClient` and :class:`clients.aio.AsyncTritonClient`
differ only in how they wait (blocking or ``await``) and cannot drift apart in what they validate or return.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from clients import embeddings as embedding_rules
from clients import inputs as input_rules
from clients.errors import InvalidRequest, ModelNotFound, RegionsLost
from clients.model_info import ModelInfo, build_model_info
from clients.results import InferenceResult, interpret
from clients.retry import Attempts, CallContext
from clients.settings import ClientConfig, RetryPolicy
from clients.shm import Lease, ShmPool, is_already_registered, is_regions_lost


@dataclass
class PlannedRequest:
    """A validated request: what to send, what to ask for, and how big the answer will be."""

    info: ModelInfo
    arrays: dict[str, np.ndarray]
    batch: int
    outputs: list[str]
    output_specs: dict[str, tuple[np.dtype, tuple[int, ...]]]


def build_config(url: str | None, protocol: str | None, config: ClientConfig | None, overrides: dict[str, Any]
                 ) -> ClientConfig:
    """``config`` (or the defaults) with ``url``/``protocol`` and any other keyword fields applied."""
    from common.config import validate

    base = (config or ClientConfig()).model_dump()
    if protocol is not None:
        base["protocol"] = protocol
        if url is None and config is not None and config.url is None:
            base["url"] = None
    if url is not None:
        base["url"] = url
    for key, value in overrides.items():
        if key not in ClientConfig.model_fields:
            raise TypeError(f"unknown client setting {key!r}; expected one of {', '.join(ClientConfig.model_fields)}")
        base[key] = value
    return validate(ClientConfig, base, "client configuration")


class ClientCore:
    """State and pure logic of one client object."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self.url = config.endpoint
        self.protocol = config.protocol
        self.policy = config.retry
        self._infos: dict[tuple[str, str], ModelInfo] = {}
        self._infos_lock = threading.Lock()
        self._tokenizer: input_rules.Tokenizer | None = None
        self._encoder: embedding_rules.TokenEncoder | None = None
        self.shm: ShmPool | None = (ShmPool(config.shared_memory, config.cuda_device, config.shared_memory_slots)
                                    if config.shared_memory != "none" else None)

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def attempts(self, what: str, model: str = "", policy: RetryPolicy | None = None) -> Attempts:
        """Bookkeeping (clock, budget, attempt count) for one library call."""
        return Attempts(policy or self.policy, CallContext(what, self.url, self.protocol, model))

    def single_attempt_policy(self, timeout_s: float | None = None) -> RetryPolicy:
        """One try bounded by ``timeout_s`` (health probes: their answer is the state, not an error)."""
        timeout = timeout_s or self.policy.timeout_s
        return self.policy.model_copy(update={"timeout_s": timeout, "budget_s": timeout, "max_attempts": 1})

    # -- model information ----------------------------------------------------------------------------------------
    def cached_info(self, model: str, version: str) -> ModelInfo | None:
        with self._infos_lock:
            return self._infos.get((model, version))

    def remember_info(self, metadata, config, version: str) -> ModelInfo:
        info = build_model_info(metadata, config, version)
        if version and info.versions and version not in info.versions:
            raise ModelNotFound(f"model '{info.name}' has no version {version} at {self.protocol}://{self.url} "
                                f"(available: {', '.join(info.versions)})")
        with self._infos_lock:
            self._infos[(info.name, version)] = info
        return info

    def forget(self, model: str | None = None) -> None:
        """Drop cached model information (all models, or one), e.g. after a new version was published."""
        with self._infos_lock:
            for key in [k for k in self._infos if model is None or k[0] == model]:
                del self._infos[key]

    def not_found(self, model: str, version: str, index: list[dict[str, str]] | None) -> ModelNotFound:
        """The error for an unknown model or version, listing what the server does serve when it can."""
        where = f"{self.protocol}://{self.url}"
        ready = [m for m in index or [] if m.get("state", "READY") == "READY"]
        versions = sorted({m["version"] for m in ready if m["name"] == model and m.get("version")})
        if version and versions:
            return ModelNotFound(f"model '{model}' has no version {version} at {where}; ready versions: "
                                 f"{', '.join(versions)}")
        what = f"model '{model}'" + (f" version {version}" if version else "")
        if index is None:
            return ModelNotFound(f"unknown {what} at {where}")
        names = sorted({m["name"] for m in ready})
        serves = f"it serves: {', '.join(names)}" if names else "it serves no ready model"
        return ModelNotFound(f"unknown {what} at {where}; {serves}")

    # -- requests ---------------------------------------------------------------------------------------------------
    def tokenizer(self) -> input_rules.Tokenizer | None:
        if self._tokenizer is None and self.config.tokenizer is not None:
            self._tokenizer = input_rules.Tokenizer(self.config.tokenizer)
        return self._tokenizer

    def token_encoder(self) -> embedding_rules.TokenEncoder | None:
        """The configured tokenizer.json as an encoder of several token inputs (for embedding encoders)."""
        if self._encoder is None and self.config.tokenizer is not None:
            self._encoder = embedding_rules.TokenEncoder(self.config.tokenizer)
        return self._encoder

    def embed_requests(self, info: ModelInfo, texts: Any, batch_size: int | None) -> tuple[str, list[Any]]:
        """The embedding output's name and the inputs of each request an ``embed`` call sends (in order)."""
        texts = embedding_rules.check_texts(info.name, texts)
        output = embedding_rules.embedding_output(info)
        encoder = self.token_encoder() if embedding_rules.takes_tokens(info) else None
        return output, [embedding_rules.request_inputs(info, chunk, encoder)
                        for chunk in embedding_rules.chunks(info, texts, batch_size)]

    def plan(self, info: ModelInfo, inputs: Any, outputs: Iterable[str] | None) -> PlannedRequest:
        tokenizer = self.tokenizer() if self.config.tokenizer is not None else None
        arrays, batch = input_rules.prepare(info, inputs, tokenizer, validate=self.config.validate_inputs)
        wanted = list(outputs) if outputs is not None else [t.name for t in info.outputs]
        unknown = [n for n in wanted if info.output(n) is None]
        if unknown:
            raise InvalidRequest(f"model '{info.name}' has no output {', '.join(repr(n) for n in unknown)}; it "
                                 f"returns: {info.describe_outputs()}")
        specs = ShmPool.output_specs(info, wanted, batch) if self.shm else {}
        return PlannedRequest(info, arrays, batch, wanted, specs)

    def server_timeout_us(self, info: ModelInfo, deadline: float) -> int | None:
        if self.policy.server_queue_timeout and info.dynamic_batching:
            return max(1, int(deadline * 1e6))
        return None

    def lease(self, plan: PlannedRequest) -> Lease | None:
        return self.shm.lease(plan.arrays, plan.output_specs) if self.shm else None

    def check_regions(self, exc: Exception) -> None:
        """Turn Triton's "unknown shared memory region" into a retryable failure after a server restart."""
        from tritonclient.utils import InferenceServerException

        if self.shm and isinstance(exc, InferenceServerException) and is_regions_lost(str(exc.message())):
            self.shm.forget_registrations()
            raise RegionsLost(f"the server lost this client's shared memory regions ({exc.message()})") from None

    def register_call(self, region) -> tuple[str, tuple]:
        """Transport method and arguments that register ``region`` with the server (the deadline comes last)."""
        pool = self.shm
        if pool.kind == "cuda":
            return "register_cuda_shm", (region.name, pool.raw_handle(region), pool.device_id, region.byte_size)
        return "register_system_shm", (region.name, region.key, region.byte_size)

    @staticmethod
    def registered_anyway(exc: Exception) -> bool:
        """A registration that failed only because an earlier, timed-out attempt of it reached the server."""
        from tritonclient.utils import InferenceServerException

        return isinstance(exc, InferenceServerException) and is_already_registered(str(exc.message()))

    def unregister_call(self, region) -> tuple[str, tuple]:
        return ("unregister_cuda_shm" if self.shm.kind == "cuda" else "unregister_system_shm"), (region.name,)

    @staticmethod
    def merge_outputs(plan: PlannedRequest, in_band: dict[str, np.ndarray], from_shm: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
        merged = dict(in_band)
        merged.update(from_shm)
        return {name: merged[name] for name in plan.outputs if name in merged}

    def result(self, plan: PlannedRequest, outputs: dict[str, np.ndarray], state: Attempts) -> InferenceResult:
        result = interpret(plan.info, outputs, self.protocol)
        result.latency_s = time.monotonic() - state.started
        result.attempts, result.retries = state.count, state.retries
        return result
