"""Alert rules: the conditions that page someone (``severity: page``) or open a ticket (``severity: warning``).

Each alert is a *signal* (a PromQL expression that measures something and returns data whenever its source is
scraped) and a *condition* on it (the signal compared with a threshold from ``slo.toml``). Keeping the signal apart lets
the real-Prometheus test prove that every alert watches series that exist, not only that its expression parses.

Annotations answer "why?": each points at the panels that explain the condition, and the latency alert quotes the SLO
it broke. They are rendered by Prometheus' template engine; the promtool tests check their exact text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.promql import exact_regex, number, quote
from monitoring.recording_rules import TRAINING_CHECKPOINT_AGE, TRAINING_RUNNING, RuleGroup
from monitoring.slo import SLOConfig
from monitoring.targets import TRITON

DASHBOARD_HINT = "Grafana: Inference service / SLO overview"


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    signal: str                     # what the condition measures (see module docstring)
    extra_labels: dict[str, str] = field(default_factory=dict)

    def as_yaml(self) -> dict:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.extra_labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def latency_alert(slo: SLOConfig) -> AlertRule:
    signal = 'model:inference_request_latency_seconds{quantile="0.99"}'
    budget = ('{{ with printf "model:slo_request_latency_p99_seconds{model=\'%s\'}" $labels.model | query }}'
              '{{ . | first | value | humanizeDuration }}{{ end }}')
    return AlertRule(
        alert="InferenceLatencyP99AboveSLO",
        expr=f"{signal}\n> on (model) group_left ()\nmodel:slo_request_latency_p99_seconds",
        for_=slo.latency.for_,
        severity="page",
        summary=("{{ $labels.model }}: p99 latency {{ $value | humanizeDuration }} ({{ $labels.source }}) is above "
                 f"its SLO of {budget}"),
        description=("source=client is what callers see across all servers; source=triton is the worst single "
                     "server's own view. Why: compare queue and compute time, batch size and pending requests on "
                     f"{DASHBOARD_HINT}."),
        signal=signal,
    )


def error_alert(slo: SLOConfig) -> AlertRule:
    signal = "model:inference_errors:ratio"
    return AlertRule(
        alert="InferenceErrorRatioHigh",
        expr=f"{signal} > {number(slo.errors.max_ratio)}",
        for_=slo.errors.for_,
        severity="page",
        summary=("{{ $labels.model }}: {{ $value | humanizePercentage }} of requests fail ({{ $labels.source }}); "
                 f"the SLO allows {number(slo.errors.max_ratio * 100)}%"),
        description=("source=triton counts executions that failed inside Triton; source=client also sees requests "
                     "Triton rejected before running them (bad shapes), refused connections and errors a python model "
                     f"returned per request (Triton counts those as successes). Check the server log and "
                     f"{DASHBOARD_HINT}."),
        signal=signal,
    )


def model_not_ready_alerts(slo: SLOConfig) -> list[AlertRule]:
    """A live Triton that exports no series for a model it must serve: Triton exports a model's metrics only while
    that model is loaded and ready, so their absence on a scraped server means not ready."""
    live_tritons = f'group by (instance, job) (up{{job={quote(TRITON.name)}}} == 1)'
    rules = []
    for model in slo.ready_models:
        served = f'group by (instance) (nv_inference_request_success{{model={quote(model)}}})'
        rules.append(AlertRule(
            alert="ModelNotReady",
            expr=f"{live_tritons}\nunless on (instance)\n{served}",
            for_=slo.readiness.for_,
            severity="page",
            summary="{{ $labels.instance }}: Triton is up but model " + model + " is not ready",
            description=("Triton exports a model's metrics only while it is loaded; check "
                         "/v2/repository/index and the server log for why the model failed to load."),
            signal=f"group by (instance, model) (nv_inference_request_success{{model={quote(model)}}})",
            extra_labels={"model": model},
        ))
    return rules


def queue_alert(slo: SLOConfig) -> AlertRule:
    signal = "model:inference_queue_to_compute:ratio"
    q = slo.queue
    return AlertRule(
        alert="InferenceQueueDominatesCompute",
        expr=(f"{signal} > {number(q.max_queue_to_compute_ratio)}\n"
              f'and on (model)\nmodel:inference_requests:rate{{source="triton"}} > {number(q.min_request_rate)}'),
        for_=q.for_,
        severity="warning",
        summary=("{{ $labels.model }}: requests wait {{ $value | printf \"%.1f\" }}x longer in Triton's queue than "
                 "they compute"),
        description=("The model is saturated: add model instances or servers, or raise max_batch_size if the "
                     f"executed batch size is at its limit ({DASHBOARD_HINT})."),
        signal=signal,
    )


def gpu_memory_alert(slo: SLOConfig) -> AlertRule:
    signal = "gpu:memory_used:ratio"
    return AlertRule(
        alert="GPUMemoryHigh",
        expr=f"max by (gpu_uuid, gpu_instance) ({signal}) > {number(slo.gpu.max_memory_ratio)}",
        for_=slo.gpu.for_,
        severity="warning",
        summary=("GPU {{ $labels.gpu_uuid }}{{ with $labels.gpu_instance }} (MIG instance {{ . }}){{ end }}: "
                 "{{ $value | humanizePercentage }} of its memory is used"),
        description=("The next model load or a larger batch may fail with out-of-memory. The value is the highest of "
                     "dcgm-exporter, Triton and the NVML exporter for this GPU."),
        signal=signal,
    )


def target_down_alerts(slo: SLOConfig) -> list[AlertRule]:
    paging = exact_regex(slo.targets.paging_jobs)
    common = dict(
        alert="ScrapeTargetDown",
        for_=slo.targets.for_,
        summary="{{ $labels.job }} target {{ $labels.instance }} is down",
        description=("Prometheus cannot scrape it: the panels fed by this job show no data. Check that the service "
                     "runs and that its metrics port is reachable from Prometheus."),
        signal="up",
    )
    rules = []
    if paging:
        rules.append(AlertRule(expr=f"up{{job=~{quote(paging)}}} == 0", severity="page", **common))
        rules.append(AlertRule(expr=f"up{{job!~{quote(paging)}}} == 0", severity="warning", **common))
    else:
        rules.append(AlertRule(expr="up == 0", severity="warning", **common))
    return rules


def training_alert(slo: SLOConfig) -> AlertRule:
    signal = "model:training_seconds_since_checkpoint:max"
    return AlertRule(
        alert="TrainingStalled",
        expr=(f"{signal} > {number(slo.training.max_seconds_without_checkpoint)}\n"
              f"and on (model)\nmax by (model) ({TRAINING_RUNNING}) == 1"),
        for_=slo.training.for_,
        severity="warning",
        summary="training of {{ $labels.model }} wrote no checkpoint for {{ $value | humanizeDuration }}",
        description=(f"From {TRAINING_CHECKPOINT_AGE} while {TRAINING_RUNNING} is 1 (an idle sidecar waiting for "
                     "data does not alert). Check the trainer log for a hang, a crashed data loader or a full disk; "
                     "the run resumes from its last checkpoint when restarted."),
        signal=signal,
    )


def alert_groups(slo: SLOConfig) -> list[RuleGroup]:
    return [
        RuleGroup("inference-alerts", [latency_alert(slo), error_alert(slo), *model_not_ready_alerts(slo),
                                       queue_alert(slo)]),
        RuleGroup("platform-alerts", [gpu_memory_alert(slo), *target_down_alerts(slo), training_alert(slo)]),
    ]


def all_alerts(slo: SLOConfig) -> list[AlertRule]:
    return [rule for group in alert_groups(slo) for rule in group.rules]
