"""The scrape jobs of the platform: their names, what exposes them, and where they live in docker compose.

Job names are part of the contract between the Prometheus configuration, the alert rules (``up{job="triton"}``), the
dashboards and the "which target is missing" messages, so they are defined once, here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScrapeJob:
    name: str                       # Prometheus job label
    what: str                       # what exposes the metrics, for messages ("target triton (Triton's metrics ...)")
    compose_targets: tuple[str, ...] = ()   # static host:port targets on the compose network
    compose_dns_name: str | None = None     # or: every replica behind this compose service name (DNS A records)
    compose_dns_port: int | None = None
    cli_flag: str | None = None             # flag of `python -m monitoring prometheus` that adds a local target


TRITON = ScrapeJob("triton", "Triton's metrics endpoint (nv_inference_*, nv_cpu_*, nv_gpu_*)",
                   compose_targets=("triton:8002",), cli_flag="--triton")
CLIENTS = ScrapeJob("clients", "the load generators' client latency histograms (inference_client_*)",
                    compose_dns_name="locust-worker", compose_dns_port=9646, cli_flag="--client-metrics")
TRAINER = ScrapeJob("trainer", "the training sidecar (training_*)",
                    compose_targets=("trainer:9402",), cli_flag="--trainer")
DCGM = ScrapeJob("dcgm-exporter", "NVIDIA dcgm-exporter (DCGM_FI_DEV_*)",
                 compose_targets=("dcgm-exporter:9400",), cli_flag="--dcgm-exporter")
GPU_EXPORTER = ScrapeJob("gpu-exporter", "the NVML GPU exporter, `python -m monitoring gpu-exporter` (gpu_*)",
                         compose_targets=("gpu-exporter:9401",), cli_flag="--gpu-exporter")
PROMETHEUS = ScrapeJob("prometheus", "Prometheus itself", compose_targets=("localhost:9090",))

JOBS: tuple[ScrapeJob, ...] = (TRITON, CLIENTS, TRAINER, DCGM, GPU_EXPORTER, PROMETHEUS)
JOBS_BY_NAME = {job.name: job for job in JOBS}
