"""Where the time goes inside Triton: deltas of its statistics API over a measurement window.

Triton's cumulative per-model statistics (``/v2/models/<m>/stats``) give, per successful request, the time spent
queued and in compute (input copy, inference, output copy), plus how many executions ran, so the average executed
batch size shows whether dynamic batching is doing its job.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Totals:
    success: int = 0
    fail: int = 0
    executions: int = 0
    inferences: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    request_ns: int = 0


def _totals(stats: dict, model: str) -> _Totals:
    totals = _Totals()
    for entry in stats.get("model_stats", []):
        if entry.get("name") != model:
            continue
        infer = entry.get("inference_stats", {})
        totals.success += int(infer.get("success", {}).get("count", 0))
        totals.fail += int(infer.get("fail", {}).get("count", 0))
        totals.request_ns += int(infer.get("success", {}).get("ns", 0))
        totals.queue_ns += int(infer.get("queue", {}).get("ns", 0))
        totals.compute_input_ns += int(infer.get("compute_input", {}).get("ns", 0))
        totals.compute_infer_ns += int(infer.get("compute_infer", {}).get("ns", 0))
        totals.compute_output_ns += int(infer.get("compute_output", {}).get("ns", 0))
        totals.executions += int(entry.get("execution_count", 0))
        totals.inferences += int(entry.get("inference_count", 0))
    return totals


class StatsWindow:
    """Snapshot Triton's statistics for ``model`` at start, and report per-request averages at stop."""

    def __init__(self, http_url: str, model: str, headers: dict[str, str] | None = None):
        self.http_url, self.model, self.headers = http_url, model, headers
        self._before: _Totals | None = None

    def _fetch(self) -> _Totals | None:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        try:
            client = httpclient.InferenceServerClient(self.http_url, connection_timeout=5, network_timeout=5)
            try:
                return _totals(client.get_inference_statistics(self.model, headers=self.headers), self.model)
            finally:
                client.close()
        except (InferenceServerException, OSError, ConnectionError):
            return None  # statistics API restricted or server gone: report without the breakdown

    def start(self) -> "StatsWindow":
        self._before = self._fetch()
        return self

    def stop(self) -> dict | None:
        after = self._fetch()
        if self._before is None or after is None:
            return None
        b = self._before
        ok = after.success - b.success
        executions = after.executions - b.executions
        if ok <= 0:
            return {"requests": 0}

        def per_request_ms(field: str) -> float:
            return round((getattr(after, field) - getattr(b, field)) / ok / 1e6, 3)

        return {
            "requests": ok,
            "failed": after.fail - b.fail,
            "executions": executions,
            "avg_batch_size": round((after.inferences - b.inferences) / executions, 2) if executions else None,
            "request_ms": per_request_ms("request_ns"),
            "queue_ms": per_request_ms("queue_ns"),
            "compute_input_ms": per_request_ms("compute_input_ns"),
            "compute_infer_ms": per_request_ms("compute_infer_ns"),
            "compute_output_ms": per_request_ms("compute_output_ns"),
        }
