"""Where the time goes inside Triton: deltas of its statistics API over a measurement window.

Triton's cumulative per-model statistics (``/v2/models/<m>/stats``) give, per successful request, the time spent
queued and in compute (input copy, inference, output copy), plus how many executions ran, so the average executed
batch size shows whether dynamic batching is doing its job.

An ensemble (``textclf_text``: tokenizer → textclf → labels) does not batch: its own statistics sum its steps' times,
and its "executions" are simply its requests. So for an ensemble the window also reports every composing model
(``steps``, in pipeline order, nested ensembles expanded), which is where batching and the time actually show up.
A step's figures include any traffic sent to that model directly during the window.
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
    """Sum over every version of ``model`` in a statistics answer (all versions serve the same name)."""
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


def _delta(before: _Totals, after: _Totals, batches: bool) -> dict:
    """Per-request averages over the window; ``batches`` is False for an ensemble, whose executions are requests."""
    ok = after.success - before.success
    if ok <= 0:
        return {"requests": 0}
    executions = after.executions - before.executions

    def per_request_ms(field: str) -> float:
        return round((getattr(after, field) - getattr(before, field)) / ok / 1e6, 3)

    return {
        "requests": ok,
        "failed": after.fail - before.fail,
        "executions": executions,
        "avg_batch_size": (round((after.inferences - before.inferences) / executions, 2)
                           if batches and executions else None),
        "request_ms": per_request_ms("request_ns"),
        "queue_ms": per_request_ms("queue_ns"),
        "compute_input_ms": per_request_ms("compute_input_ns"),
        "compute_infer_ms": per_request_ms("compute_infer_ns"),
        "compute_output_ms": per_request_ms("compute_output_ns"),
    }


def ensemble_steps(config: dict, config_of) -> list[str]:
    """Composing models of an ensemble config in pipeline order, nested ensembles expanded (``[]`` if not one)."""
    if config.get("platform") != "ensemble":
        return []
    names: list[str] = []
    for step in config.get("ensemble_scheduling", {}).get("step", []):
        name = step["model_name"]
        inner = ensemble_steps(config_of(name), config_of)
        for entry in inner or [name]:
            if entry not in names:
                names.append(entry)
    return names


def format_step(step: dict) -> str:
    """A composing model's figures on one line, for printed summaries."""
    return (f"{step['model']}: queue {step.get('queue_ms')} ms, infer {step.get('compute_infer_ms')} ms, "
            f"avg batch {step.get('avg_batch_size')}")


class StatsWindow:
    """Snapshot Triton's statistics for ``model`` (and an ensemble's steps) at start; per-request averages at stop."""

    def __init__(self, http_url: str, model: str, headers: dict[str, str] | None = None):
        self.http_url, self.model, self.headers = http_url, model, headers
        self.ensemble = False
        self.steps: list[str] = []
        self._before: dict[str, _Totals] | None = None

    def _ask(self, question):
        """``question(client)`` on a fresh HTTP client; None when the server is gone or the API is not allowed."""
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        try:
            client = httpclient.InferenceServerClient(self.http_url, connection_timeout=5, network_timeout=5)
            try:
                return question(client)
            finally:
                client.close()
        except (InferenceServerException, OSError, ConnectionError):
            return None

    def _fetch(self) -> dict[str, _Totals] | None:
        # one answer for every model, so the ensemble and its steps are read at the same instant
        stats = self._ask(lambda client: client.get_inference_statistics("", headers=self.headers))
        return None if stats is None else {name: _totals(stats, name) for name in [self.model, *self.steps]}

    def start(self) -> "StatsWindow":
        config = self._ask(lambda client: client.get_model_config(self.model, headers=self.headers)) or {}
        self.ensemble = config.get("platform") == "ensemble"  # not loaded: the run itself will say so
        if self.ensemble:
            self.steps = self._ask(lambda client: ensemble_steps(
                config, lambda name: client.get_model_config(name, headers=self.headers))) or []
        self._before = self._fetch()
        return self

    def stop(self) -> dict | None:
        after = self._fetch()
        if self._before is None or after is None:
            return None
        result = _delta(self._before[self.model], after[self.model], batches=not self.ensemble)
        if self.steps and result.get("requests"):
            result["steps"] = [{"model": name, **_delta(self._before[name], after[name], batches=True)}
                               for name in self.steps]
        return result
