"""Prometheus configuration files: the docker compose one (committed) and local ones (written per run).

Both come from :mod:`monitoring.targets`, so a job is named the same in the compose stack, in a local run and in the
alert rules. Rule files are referenced relative to the configuration file (Prometheus resolves them that way), so the
compose file works when ``monitoring/prometheus/`` is mounted at ``/etc/prometheus/``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from monitoring.slo import SLOConfig, duration_seconds
from monitoring.targets import JOBS

RULE_FILES_GLOB = "rules/*.yml"


def _timeout(interval: str) -> str:
    """Prometheus rejects a scrape timeout longer than the interval; 10 s is its default otherwise."""
    return interval if duration_seconds(interval) < 10 else "10s"


def _global(scrape_interval: str, evaluation_interval: str) -> dict:
    return {"scrape_interval": scrape_interval, "scrape_timeout": _timeout(scrape_interval),
            "evaluation_interval": evaluation_interval}


def compose_config(slo: SLOConfig) -> dict:
    """The compose stack: every job at its compose service name; load generators found through DNS (all replicas)."""
    scrape_configs = []
    for job in JOBS:
        entry: dict = {"job_name": job.name}
        if job.compose_dns_name:
            entry["dns_sd_configs"] = [{"names": [job.compose_dns_name], "type": "A", "port": job.compose_dns_port,
                                        "refresh_interval": "15s"}]
        else:
            entry["static_configs"] = [{"targets": list(job.compose_targets)}]
        scrape_configs.append(entry)
    return {
        "global": _global(slo.compose.scrape_interval, slo.compose.evaluation_interval),
        "rule_files": [RULE_FILES_GLOB],
        "scrape_configs": scrape_configs,
    }


def local_config(targets: Mapping[str, Sequence[str]], scrape_interval: str, evaluation_interval: str,
                 self_address: str) -> dict:
    """A local run: ``targets`` maps job name to ``host:port`` list; Prometheus scrapes itself at ``self_address``."""
    scrape_configs = [{"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                      for job, addresses in targets.items() if addresses]
    scrape_configs.append({"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]})
    return {
        "global": _global(scrape_interval, evaluation_interval),
        "rule_files": [RULE_FILES_GLOB],
        "scrape_configs": scrape_configs,
    }
