"""How a client talks to Triton, as data: where, over which protocol, with which deadlines, retries and fast paths.

One :class:`ClientConfig` drives the library (:class:`clients.TritonClient`, :class:`clients.AsyncTritonClient`) and
the command line; load it from TOML/YAML with :func:`load_client_config` (flags override the file). The defaults
suit a service calling a nearby Triton: a 10 s deadline per attempt, a 20 s budget for the whole call including its
retries, exponential backoff with full jitter between 50 ms and 2 s.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from clients.serve import ADMIN_TOKEN_ENV
from common.config import load_config

Protocol = Literal["http", "grpc"]
SharedMemory = Literal["none", "system", "cuda"]

DEFAULT_PORTS: dict[str, int] = {"http": 8000, "grpc": 8001}
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})(?P<path>/[^\s]*)?$")


def default_url(protocol: str) -> str:
    """Triton's standard local endpoint for ``protocol`` (HTTP 8000, gRPC 8001)."""
    return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"


def normalize_url(url: str, protocol: str) -> str:
    """``HOST:PORT`` as tritonclient wants it: a scheme is stripped, anything else malformed is refused.

    Raises ValueError with a sentence naming the bad value and the expected form.
    """
    text = url.strip()
    for scheme in ("http://", "grpc://", "https://"):
        if text.startswith(scheme):
            if scheme == "https://":
                raise ValueError(f"url {url!r}: TLS endpoints are not configured here (expected HOST:PORT over plain {protocol})")
            text = text[len(scheme):]
    text = text.rstrip("/")
    match = _HOST_PORT.match(text)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"url {url!r} is not HOST:PORT (expected e.g. {default_url(protocol)})")
    if match["path"] and protocol == "grpc":
        raise ValueError(f"url {url!r}: a gRPC endpoint has no path (expected HOST:PORT)")
    return text


class RetryPolicy(BaseModel):
    """Deadlines and retries for one call.

    Each attempt gets ``min(timeout_s, what is left of budget_s)``; only retryable failures (server unavailable,
    connection refused or reset, HTTP 502/503/504, gRPC UNAVAILABLE, a full or timed-out Triton queue) are retried,
    after a pause drawn uniformly from ``[0, min(backoff_max_s, backoff_initial_s * backoff_multiplier**n)]``
    ("full jitter", so many clients do not retry in lock-step). Invalid input, an unknown model and deadline
    overruns are never retried. The whole call, pauses included, never takes longer than ``budget_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(10.0, gt=0, description="deadline of one attempt, in seconds")
    budget_s: float = Field(20.0, gt=0, description="deadline of the whole call across all attempts and pauses")
    max_attempts: int | None = Field(None, ge=1, description="cap on attempts; None: as many as fit in budget_s")
    backoff_initial_s: float = Field(0.05, gt=0, description="upper bound of the first pause")
    backoff_multiplier: float = Field(2.0, ge=1.0, description="growth of the pause bound per retry")
    backoff_max_s: float = Field(2.0, gt=0, description="largest pause bound")
    server_queue_timeout: bool = Field(
        True, description="also send the attempt deadline to Triton as the request's queue timeout (models with "
                          "dynamic batching), so the server drops requests the client has already given up on")

    @model_validator(mode="after")
    def _consistent(self) -> "RetryPolicy":
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s ({self.backoff_initial_s})")
        return self


class ConnectionSettings(BaseModel):
    """Connection reuse and keep-alive. One client object keeps its connections (HTTP) or channel (gRPC) open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    http_pool_size: int = Field(4, ge=1, description="kept-alive HTTP connections per thread (sync) or in total (async)")
    grpc_keepalive_time_ms: int = Field(30_000, ge=1000, description="gRPC keep-alive ping interval on an idle channel")
    grpc_keepalive_timeout_ms: int = Field(10_000, ge=100, description="how long a keep-alive ping may go unanswered")
    grpc_reconnect_backoff_max_ms: int = Field(
        500, ge=100, description="longest wait of the gRPC channel before it tries a lost server again (gRPC's own "
                                  "default of 120 s would hide a restarted server from retries for minutes)")
    grpc_max_message_bytes: int = Field(2**31 - 1, gt=0, description="largest gRPC message sent or received")
    admin_token: SecretStr | None = Field(
        None, description="secret for Triton's restricted APIs (model repository, shared memory); None: read "
                          "$TRITON_ADMIN_TOKEN. Sent only on those calls, as 'triton-admin-token' over HTTP and "
                          "'triton-grpc-protocol-triton-admin-token' over gRPC")

    def resolved_admin_token(self, url: str | None = None) -> str | None:
        """The token from these settings, else from ``$TRITON_ADMIN_TOKEN`` (the variable the launcher and compose use),
        else the per-start token a local ``clients serve`` wrote for ``url``'s port (:mod:`clients.admin_token`)."""
        import os

        from clients.admin_token import read_token_for

        if self.admin_token is not None and self.admin_token.get_secret_value():
            return self.admin_token.get_secret_value()
        return os.environ.get(ADMIN_TOKEN_ENV) or (read_token_for(url) if url else None)


class ClientConfig(BaseModel):
    """Everything a client needs; ``url`` defaults to Triton's standard port for the protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Protocol = "http"
    url: str | None = Field(None, description="HOST:PORT; default 127.0.0.1:8000 (http) or 127.0.0.1:8001 (grpc)")
    retry: RetryPolicy = RetryPolicy()
    connection: ConnectionSettings = ConnectionSettings()
    shared_memory: SharedMemory = Field(
        "none", description="pass tensors through system (same host) or CUDA (same GPU host) shared memory")
    shared_memory_slots: int = Field(
        32, ge=1, description="most calls in flight using shared memory at once (each holds its own regions); "
                              "calls beyond it send their tensors in the request")
    cuda_device: int = Field(0, ge=0, description="GPU for CUDA shared memory regions")
    validate_inputs: bool = Field(True, description="check names, datatypes, shapes and batch size before sending")
    tokenizer: Path | None = Field(None, description="tokenizer.json that turns raw text into input_ids for token models")

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        return normalize_url(value, info.data.get("protocol", "http"))

    @property
    def endpoint(self) -> str:
        return self.url or default_url(self.protocol)


def load_client_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> ClientConfig:
    """Defaults, then the TOML/YAML/JSON file at ``path``, then ``overrides`` (dotted keys, None ignored)."""
    return load_config(ClientConfig, path, overrides)
