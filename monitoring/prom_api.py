"""A small client for Prometheus' HTTP API (``/api/v1``) that turns every failure into one clear sentence.

Why not a third-party client: the commands need four endpoints (query, query_range, targets, rules) and, above all,
errors that say which Prometheus is down or which query is wrong; ``requests`` plus this module is smaller than
adapting a library's exceptions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import requests

from common.errors import UserError
from monitoring.targets import JOBS_BY_NAME


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]


@dataclass(frozen=True)
class TargetHealth:
    job: str
    instance: str
    health: str                 # up / down / unknown
    last_error: str

    @property
    def up(self) -> bool:
        return self.health == "up"


class QueryError(UserError):
    """Prometheus answered, but refused the query (bad PromQL, timeout); the message quotes its reason."""


class PrometheusAPI:
    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict | None = None, method: str = "GET") -> dict:
        try:
            if method == "POST":
                response = requests.post(self.url + path, data=params, timeout=self.timeout_s)
            else:
                response = requests.get(self.url + path, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise UserError(f"Prometheus at {self.url} is not reachable ({type(exc).__name__}); start it with "
                            "`python -m monitoring prometheus --triton HOST:PORT` or pass --prometheus URL") from None
        try:
            body = response.json()
        except ValueError:
            raise UserError(f"{self.url}{path} answered HTTP {response.status_code} without JSON; is {self.url} a "
                            "Prometheus server?") from None
        if body.get("status") != "success":
            raise QueryError(f"Prometheus refused {path} {params or ''}: {body.get('errorType', '?')}: "
                             f"{body.get('error', response.text[:200])}")
        return body["data"]

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """Instant query; one sample per returned series."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params, method="POST")
        if data["resultType"] == "scalar":
            t, v = data["result"]
            return [Series({}, [float(t)], [float(v)])]
        return [Series(r["metric"], [float(r["value"][0])], [float(r["value"][1])]) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                  "step": f"{step_s:g}"}, method="POST")
        return [Series(r["metric"], [float(t) for t, _ in r["values"]], [float(v) for _, v in r["values"]])
                for r in data["result"]]

    def targets(self) -> list[TargetHealth]:
        data = self._get("/api/v1/targets", {"state": "active"})
        return [TargetHealth(t["labels"].get("job", "?"), t["labels"].get("instance", "?"), t.get("health", "unknown"),
                             t.get("lastError", "")) for t in data["activeTargets"]]

    def rules(self) -> list[dict]:
        """Every loaded rule with its health, last error and type (``recording`` / ``alerting``)."""
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]


def finite(series: Series) -> bool:
    """Whether a series holds at least one real number (NaN from 0/0 or an idle summary does not count)."""
    return any(not math.isnan(v) and not math.isinf(v) for v in series.values)


def describe_down(targets: list[TargetHealth], expected_jobs: list[str] | None = None) -> list[str]:
    """One sentence per missing or unhealthy target, naming the job and the reason Prometheus gives."""
    lines = []
    for t in targets:
        if not t.up:
            what = JOBS_BY_NAME[t.job].what if t.job in JOBS_BY_NAME else t.job
            reason = t.last_error or "not scraped yet"
            lines.append(f"target {t.job} at {t.instance} is {t.health} ({what}): {reason}")
    seen = {t.job for t in targets}
    for job in expected_jobs or []:
        if job not in seen:
            what = JOBS_BY_NAME[job].what if job in JOBS_BY_NAME else job
            lines.append(f"no target of job {job} is configured ({what})")
    return lines
