"""Recording rules: per-model rates, ratios, means and latency percentiles, computed once for alerts and dashboards.

Why record instead of querying raw metrics everywhere: the alerts, the Grafana panels and the PNG panels then read the
same series, so a number on a dashboard is exactly the number an alert compared with its threshold.

Naming follows Prometheus' ``level:metric:operation`` convention. Where one quantity is seen from two places the
series carry ``source``: ``triton`` (Triton's own counters and summaries, i.e. the time inside the server) or
``client`` (the load generators' histograms, i.e. what callers experience, network and retries included). Where the
percentiles come from, and why each is correct across several servers, is explained in ``monitoring/README.md``.

Every rate uses ``rate_window`` from the SLO file. Rules that read other recorded series sit after them in the same
group, because Prometheus evaluates a group's rules in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.promql import exact_regex, number, quote
from monitoring.slo import SLOConfig

QUANTILES = ("0.5", "0.95", "0.99")

# Metric names other components expose (checked against the real Triton 2.51 and clients/metrics.py).
CLIENT_HISTOGRAM = "inference_client_request_duration_seconds"
CLIENT_RETRIES = "inference_client_retries_total"
CLIENT_OK_OUTCOME = "ok"
TRAINING_CHECKPOINT_AGE = "training_seconds_since_checkpoint"   # since process start before the first checkpoint
TRAINING_RUNNING = "training_running"                              # 1 while training, 0 while the sidecar idles

# The autoscaling signal (deploy/kubernetes: prometheus-adapter serves the per-pod series to the HPA, KEDA reads the
# per-job one). Labels kept: Kubernetes' namespace and pod where the scrape adds them, instance everywhere.
QUEUE_PER_REQUEST_POD = "instance:inference_queue_seconds_per_request:mean"
QUEUE_PER_REQUEST_FLEET = "job:inference_queue_seconds_per_request:mean"
NVIDIA_K8S_ONPREM_QUEUE_QUERY = ("avg(delta(nv_inference_queue_duration_us[30s])"
                                 "/(1+delta(nv_inference_request_success[30s])))")


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)

    def as_yaml(self) -> dict:
        out: dict = {"record": self.record, "expr": self.expr}
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: list


def _triton_rules(w: str) -> list[RecordingRule]:
    def per_model_rate(metric: str) -> str:
        return f"sum by (model) (rate({metric}[{w}]))"

    success = per_model_rate("nv_inference_request_success")
    per_request_us = f"{success} / 1e6"
    return [
        # A model with no failure series (older Tritons create them on the first failure) has 0 failures, not "no data".
        RecordingRule("model:inference_failures:rate",
                      f"{per_model_rate('nv_inference_request_failure')}\nor\n0 * {success}"),
        RecordingRule("model:inference_requests:rate", f"{success}\n+\nmodel:inference_failures:rate",
                      {"source": "triton"}),
        RecordingRule("model:inference_errors:ratio",
                      "model:inference_failures:rate\n/ ignoring (source)\n"
                      'model:inference_requests:rate{source="triton"}',
                      {"source": "triton"}),
        RecordingRule("model:inferences:rate", per_model_rate("nv_inference_count")),
        RecordingRule("model:inference_executions:rate", per_model_rate("nv_inference_exec_count")),
        RecordingRule("model:inference_batch_size:mean", "model:inferences:rate\n/\nmodel:inference_executions:rate"),
        RecordingRule("model:inference_request_seconds:mean",
                      f"{per_model_rate('nv_inference_request_duration_us')}\n/\n{per_request_us}"),
        RecordingRule("model:inference_queue_seconds:mean",
                      f"{per_model_rate('nv_inference_queue_duration_us')}\n/\n{per_request_us}"),
        RecordingRule("model:inference_compute_seconds:mean",
                      "(\n  " + "\n+ ".join(per_model_rate(f"nv_inference_compute_{phase}_duration_us")
                                            for phase in ("input", "infer", "output"))
                      + f"\n)\n/\n{per_request_us}"),
        RecordingRule("model:inference_queue_to_compute:ratio",
                      "model:inference_queue_seconds:mean\n/\nmodel:inference_compute_seconds:mean"),
        RecordingRule("model:inference_pending_requests:sum", "sum by (model) (nv_inference_pending_request_count)"),
    ]


def _latency_rules(w: str) -> list[RecordingRule]:
    quantile_matcher = f"quantile=~{quote(exact_regex(QUANTILES))}"
    rules = [
        # Per server: Triton's summary is a per-process sliding-window quantile; it may be shown per instance ...
        RecordingRule("instance_model:inference_request_latency_seconds",
                      f"max by (instance, model, quantile) (nv_inference_request_summary_us{{{quantile_matcher}}})"
                      " / 1e6"),
        # ... and its maximum over servers is an upper bound of the fleet's quantile (never average quantiles).
        RecordingRule("model:inference_request_latency_seconds",
                      f"max by (model, quantile) (nv_inference_request_summary_us{{{quantile_matcher}}}) / 1e6",
                      {"source": "triton"}),
    ]
    buckets = f'sum by (le, model) (rate({CLIENT_HISTOGRAM}_bucket{{model!=""}}[{w}]))'
    for q in QUANTILES:
        # Client histograms add up across processes and servers, so this quantile is the fleet's (bucket-accurate).
        rules.append(RecordingRule("model:inference_request_latency_seconds", f"histogram_quantile({q}, {buckets})",
                                   {"source": "client", "quantile": q}))
    return rules


def _client_rules(w: str) -> list[RecordingRule]:
    count = f"{CLIENT_HISTOGRAM}_count"
    return [
        RecordingRule("model:inference_requests:rate", f'sum by (model) (rate({count}{{model!=""}}[{w}]))',
                      {"source": "client"}),
        # A model without any failed call has no error series at all: count it as 0, not as "no data".
        RecordingRule("model:inference_errors:ratio",
                      f'(\n  sum by (model) (rate({count}{{model!="", outcome!={quote(CLIENT_OK_OUTCOME)}}}[{w}]))\n'
                      f'  or\n  0 * sum by (model) (rate({count}{{model!=""}}[{w}]))\n)\n/ ignoring (source)\n'
                      f'model:inference_requests:rate{{source="client"}}',
                      {"source": "client"}),
        RecordingRule("model:client_retries:rate", f"sum by (model) (rate({CLIENT_RETRIES}[{w}]))"),
    ]


def _autoscaling_rules(w: str) -> list[RecordingRule]:
    """Average queue time per request, weighted by requests: sum of queue time over sum of requests.

    Why not NVIDIA's k8s-onprem query (``NVIDIA_K8S_ONPREM_QUEUE_QUERY``): it averages one ratio per (model, version,
    pod) series, so every loaded model that is idle adds a 0 to the average and the result shrinks by about the number
    of loaded models (Triton server issue #8979); an autoscaler reading it never scales out. Summing numerator and
    denominator before dividing weights each model by its traffic, so idle models change nothing. A pod that served
    no request in the window reads 0 (it has no queue), not "no data", so the HPA's average over pods stays defined.
    With an ensemble each step counts as a request, which keeps the mean proportional to queueing per client call.
    """
    def by(labels: str, metric: str) -> str:
        return f"sum by ({labels}) (rate({metric}[{w}]))"

    rules = []
    for record, labels in ((QUEUE_PER_REQUEST_POD, "namespace, pod, instance, job"),
                           (QUEUE_PER_REQUEST_FLEET, "namespace, job")):
        queue, success = by(labels, "nv_inference_queue_duration_us"), by(labels, "nv_inference_request_success")
        rules.append(RecordingRule(record, f"{queue}\n/ ({success} > 0)\n/ 1e6\nor\n0 * {success}"))
    return rules


def _slo_rules(slo: SLOConfig) -> list[RecordingRule]:
    """The p99 budget as a series per model, so alerts and dashboards compare with the same line."""
    rules = [RecordingRule("model:slo_request_latency_p99_seconds", f"vector({number(m.p99_latency_seconds)})",
                           {"model": name})
             for name, m in sorted(slo.models.items())]
    listed = exact_regex(slo.models)
    not_listed = f"model!~{quote(listed)}" if listed else 'model!=""'
    seen_models = (f"group by (model) (\n  nv_inference_request_success{{{not_listed}}}\n  or\n"
                   f"  {CLIENT_HISTOGRAM}_count{{{not_listed}, model!=\"\"}}\n)")
    rules.append(RecordingRule("model:slo_request_latency_p99_seconds",
                               f"0 * {seen_models}\n+ {number(slo.latency.default_p99_seconds)}"))
    return rules


def _gpu_rules() -> list[RecordingRule]:
    def dcgm(expr: str) -> str:
        relabelled = (f'label_replace(label_replace({expr}, "gpu_uuid", "$1", "UUID", "(.+)"), '
                      f'"gpu_instance", "$1", "GPU_I_ID", "(.+)")')
        return f"max by (gpu_uuid, gpu_instance) (\n  {relabelled}\n)"

    def source(record: str, expr: str, name: str) -> RecordingRule:
        return RecordingRule(record, expr, {"source": name})

    return [
        source("gpu:utilization:ratio", dcgm("DCGM_FI_DEV_GPU_UTIL") + " / 100", "dcgm"),
        source("gpu:utilization:ratio", "max by (gpu_uuid) (nv_gpu_utilization)", "triton"),
        source("gpu:utilization:ratio", "max by (gpu_uuid, gpu_instance) (gpu_utilization_ratio)", "nvml"),
        source("gpu:memory_used:ratio", dcgm("DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"),
               "dcgm"),
        source("gpu:memory_used:ratio", "max by (gpu_uuid) (nv_gpu_memory_used_bytes / nv_gpu_memory_total_bytes)",
               "triton"),
        source("gpu:memory_used:ratio",
               "max by (gpu_uuid, gpu_instance) (gpu_memory_used_bytes / gpu_memory_total_bytes)", "nvml"),
        source("gpu:power_usage:watts", dcgm("DCGM_FI_DEV_POWER_USAGE"), "dcgm"),
        source("gpu:power_usage:watts", "max by (gpu_uuid) (nv_gpu_power_usage)", "triton"),
        source("gpu:power_usage:watts", "max by (gpu_uuid) (gpu_power_watts)", "nvml"),
        source("gpu:temperature:celsius", dcgm("DCGM_FI_DEV_GPU_TEMP"), "dcgm"),
        source("gpu:temperature:celsius", "max by (gpu_uuid) (gpu_temperature_celsius)", "nvml"),
    ]


def _training_rules() -> list[RecordingRule]:
    # The sidecar computes the age when scraped, so it keeps growing while a hung trainer's HTTP thread still answers.
    return [RecordingRule("model:training_seconds_since_checkpoint:max", f"max by (model) ({TRAINING_CHECKPOINT_AGE})")]


def recording_groups(slo: SLOConfig) -> list[RuleGroup]:
    w = slo.rate_window
    return [
        RuleGroup("inference-triton", _triton_rules(w)),
        RuleGroup("inference-clients", _client_rules(w)),
        RuleGroup("inference-latency", _latency_rules(w)),
        RuleGroup("inference-autoscaling", _autoscaling_rules(w)),
        RuleGroup("inference-slo", _slo_rules(slo)),
        RuleGroup("gpu", _gpu_rules()),
        RuleGroup("training", _training_rules()),
    ]
