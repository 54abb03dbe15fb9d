"""The demo's settings as data (``demo/demo.toml``), validated before anything starts."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = Path(__file__).resolve().parent / "demo.toml"


class TrainStep(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    run_dir: Path
    config: Path | None = Field(None, description="a `python -m training --config` file")
    seed: int = 0
    epochs: int | None = Field(None, ge=1, description="overrides the config file's epochs")
    extra_args: list[str] = Field(default_factory=list, description="more `python -m training` flags")


class LoadStep(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "textclf_text"
    run_dir: Path | None = Field(None, description="training run whose held-out data makes the payloads")
    protocol: Literal["http", "grpc"] = "grpc"
    users: int = Field(16, ge=1)
    duration_s: float = Field(20.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1, description="the demo fails when more requests than this fail")


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[TrainStep]
    repository: Path = Path("model_repository")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    prometheus_port: int = Field(9090, ge=1, le=65535)
    client_metrics_port: int = Field(9646, ge=1, le=65535)
    queries: int = Field(8, ge=1, le=64, description="held-out examples queried over each protocol")
    load: LoadStep = LoadStep()
    work_dir: Path = Field(Path(".demo"), description="server and Prometheus logs")
    results_dir: Path = Field(Path("benchmarks/results"), description="load test results, panels and the report")
