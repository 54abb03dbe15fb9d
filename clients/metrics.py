"""Client-side metrics in prometheus_client's default registry: what the caller experienced, retries included.

Triton's own metrics stop at its front door; these start at the caller's, so the difference is the network and the
client. Monitoring relies on the names and labels below. Exposing them is the application's choice, e.g.
``prometheus_client.start_http_server(9100)`` (the load generators do that).

* ``inference_client_request_duration_seconds{model, protocol, outcome}``: one observation per inference call
  (health and metadata calls are left out so they cannot dilute the p99), from the first attempt to the final
  answer, pauses between retries included; ``outcome`` is ``ok`` or ``error``. Buckets span 0.5 ms to 10 s.
* ``inference_client_retries_total{model, protocol, reason}``: one increment per retry, ``reason`` saying what the
  failed attempt hit (``connection_refused``, ``http_503``, ``grpc_unavailable``, ``queue_full``, ...).
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_DURATION = Histogram(
    "inference_client_request_duration_seconds",
    "Latency of client calls to Triton as the caller sees it (all attempts and backoff pauses included).",
    labelnames=("model", "protocol", "outcome"),
    buckets=LATENCY_BUCKETS_S,
)

RETRIES = Counter(
    "inference_client_retries",
    "Retries of client calls to Triton after a retryable failure, by what that failure was.",
    labelnames=("model", "protocol", "reason"),
)


def observe_request(model: str, protocol: str, seconds: float, ok: bool) -> None:
    """One finished call: its latency in seconds, and whether it succeeded (also used by the Locust users)."""
    REQUEST_DURATION.labels(model=model, protocol=protocol, outcome="ok" if ok else "error").observe(seconds)


def count_retry(model: str, protocol: str, reason: str) -> None:
    RETRIES.labels(model=model, protocol=protocol, reason=reason).inc()
