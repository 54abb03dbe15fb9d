"""Settings of one Locust run, handed from ``python -m benchmarks loadtest`` to the locustfile as JSON.

The locustfile runs under gevent in its own process (torch and gevent in one process interfere), so everything it needs
travels in the environment variable ``LOADTEST_SETTINGS`` and a payload file prepared beforehand.
"""
from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_VAR = "LOADTEST_SETTINGS"


class LoadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    host: str = Field("127.0.0.1", description="Triton host")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    protocol: Literal["http", "grpc"] = "grpc"
    http_encoding: Literal["binary", "json"] = Field("binary", description="tensor encoding of HTTP requests")
    model: str = "digits"
    model_version: str = ""
    outputs: list[str] = Field(default_factory=list, description="outputs to request (all when empty)")
    payload_file: str = Field(description=".npz of request payloads (benchmarks.payloads)")
    embedding_output: str = Field("", description="embedding models: the output every answer is checked on (a "
                                                  "finite unit vector of embedding_dims values); empty = no check")
    embedding_dims: int = Field(0, ge=0, description="embedding models: values per vector")
    request_timeout_s: float = Field(10.0, gt=0)
    # load shape
    users: int = Field(16, ge=1)
    spawn_rate: float = Field(16.0, gt=0)
    duration_s: float = Field(20.0, gt=0)
    shape: Literal["constant", "step", "ramp"] = "constant"
    step_users: int = Field(8, ge=1, description="step shape: users added per step")
    step_duration_s: float = Field(10.0, gt=0, description="step shape: seconds per step")
    # arrivals
    arrival: Literal["closed", "poisson"] = Field("closed", description="closed loop, or Poisson arrivals per user")
    rate_per_user: float = Field(10.0, gt=0, description="poisson: mean requests/s of each user")
    client_metrics_port: int = Field(0, ge=0, le=65535, description="expose client latency histograms (0 = off)")
    client_metrics_port_per_worker: bool = Field(
        False, description="local master/worker runs: worker i serves on client_metrics_port + i (one host, many workers)")

    @model_validator(mode="after")
    def _shape_fits(self):
        if self.shape == "step" and self.step_users > self.users:
            raise ValueError(f"step_users ({self.step_users}) must not exceed users ({self.users})")
        if bool(self.embedding_output) != (self.embedding_dims > 0):
            raise ValueError("embedding_output and embedding_dims go together (both set, or neither)")
        return self

    def to_env(self) -> dict[str, str]:
        return {ENV_VAR: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> "LoadSettings":
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set: start Locust through `python -m benchmarks loadtest`")
        return cls.model_validate(json.loads(raw))
