"""The typed SLO configuration (``monitoring/slo.toml``): every threshold the alerts and dashboards use, in one place.

Why a file and not constants in the rule generator: the same numbers feed the alert rules, their promtool unit tests
and the SLO lines on the dashboards, and a reviewer should see an SLO change as a one-line diff to this file followed by
regenerated outputs. Loading goes through :func:`common.config.load_config`, so a bad value stops the program with a
message naming the field (``slo.toml: gpu.max_memory_ratio: Input should be less than or equal to 1``).
"""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config import load_config

DEFAULT_SLO_FILE = Path(__file__).resolve().parent / "slo.toml"

_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration with one unit (``30s``, ``5m``, ``1h``); :class:`ValueError` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; expected a number and one unit of ms, s, m, h, d (e.g. '5m')")
    return int(match["n"]) * _UNIT_SECONDS[match["unit"]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _WithFor(_Strict):
    for_: str = Field("5m", alias="for", description="how long the condition must hold before the alert fires")

    @field_validator("for_")
    @classmethod
    def _check_for(cls, value: str) -> str:
        duration_seconds(value)
        return value


class ModelSLO(_Strict):
    p99_latency_seconds: float = Field(gt=0, description="p99 request latency budget of this model")
    must_be_ready: bool = Field(True, description="page when a live Triton does not serve this model")


class LatencySLO(_WithFor):
    default_p99_seconds: float = Field(0.5, gt=0, description="p99 budget of models not listed under [models]")


class ErrorSLO(_WithFor):
    max_ratio: float = Field(0.01, gt=0, lt=0.99, description="failed / all requests above which the alert fires "
                             "(below 0.99: the generated rule tests need a failing ratio above it, in whole percent)")


class QueueSLO(_WithFor):
    for_: str = Field("10m", alias="for")
    max_queue_to_compute_ratio: float = Field(1.0, gt=0, description="mean queue time / mean compute time")
    min_request_rate: float = Field(1.0, ge=0, description="req/s below which the ratio does not alert")


class GpuSLO(_WithFor):
    max_memory_ratio: float = Field(0.9, gt=0, le=1, description="used / total GPU memory")


class TrainingSLO(_WithFor):
    for_: str = Field("1m", alias="for")
    max_seconds_without_checkpoint: float = Field(1800, gt=0, description="a running training with no checkpoint for "
                                                  "this long is stalled")


class TargetsSLO(_WithFor):
    for_: str = Field("2m", alias="for")
    paging_jobs: list[str] = Field(default_factory=lambda: ["triton", "prometheus"],
                                   description="jobs whose down targets page; other jobs warn")

    @field_validator("paging_jobs")
    @classmethod
    def _known_jobs(cls, jobs: list[str]) -> list[str]:
        from monitoring.targets import JOBS_BY_NAME

        unknown = [job for job in jobs if job not in JOBS_BY_NAME]
        if unknown:  # a typo would silently turn a paging alert into a warning
            raise ValueError(f"unknown job {unknown[0]!r} (known: {', '.join(JOBS_BY_NAME)})")
        return jobs


class ReadinessSLO(_WithFor):
    for_: str = Field("1m", alias="for")


class ComposeScrape(_Strict):
    scrape_interval: str = "5s"
    evaluation_interval: str = "5s"

    @field_validator("scrape_interval", "evaluation_interval")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class SLOConfig(_Strict):
    """Everything in ``slo.toml``; the defaults are the platform's SLOs."""

    rate_window: str = Field("1m", description="window of every rate() in the recording rules")
    models: dict[str, ModelSLO] = Field(default_factory=dict, description="per-model p99 budgets and readiness")
    latency: LatencySLO = LatencySLO()
    errors: ErrorSLO = ErrorSLO()
    queue: QueueSLO = QueueSLO()
    gpu: GpuSLO = GpuSLO()
    training: TrainingSLO = TrainingSLO()
    targets: TargetsSLO = TargetsSLO()
    readiness: ReadinessSLO = ReadinessSLO()
    compose: ComposeScrape = ComposeScrape()

    @field_validator("rate_window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @field_validator("models")
    @classmethod
    def _check_model_names(cls, value: dict[str, ModelSLO]) -> dict[str, ModelSLO]:
        for name in value:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"model name {name!r} is not a Triton model name (letters, digits, '_', '.', '-')")
        return value

    @model_validator(mode="after")
    def _window_covers_scrapes(self) -> "SLOConfig":
        self.check_window_against(self.compose.scrape_interval)
        return self

    def check_window_against(self, scrape_interval: str) -> None:
        """rate() needs at least two samples in its window; four make it robust to one missed scrape."""
        window, scrape = duration_seconds(self.rate_window), duration_seconds(scrape_interval)
        if window < 4 * scrape:
            raise ValueError(f"rate_window {self.rate_window} is shorter than 4 scrape intervals of {scrape_interval}; "
                             f"use a rate_window of at least {int(4 * scrape)}s or scrape more often")

    @property
    def ready_models(self) -> list[str]:
        return sorted(name for name, slo in self.models.items() if slo.must_be_ready)


def load_slo(path: str | Path | None = None) -> SLOConfig:
    """The SLO configuration from ``path`` (default ``monitoring/slo.toml``); a UserError naming any bad field."""
    return load_config(SLOConfig, path or DEFAULT_SLO_FILE)
