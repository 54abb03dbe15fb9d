"""promtool unit tests for the alert and recording rules, generated from the same SLO file as the rules.

Why generated: the thresholds live in ``slo.toml``; a hand-written test would have to repeat them and go stale. Each
alert gets at least one case where it fires (after its ``for`` duration, with the exact annotations Prometheus
renders) and one where it must stay silent, usually "just below the threshold" or "condition too short". Input series
use the real metric and label names of Triton 2.51, clients/metrics.py, dcgm-exporter, the NVML exporter and the
training sidecar, so the recording rules are exercised too.

Expected values are computed here with the same floating-point steps Prometheus takes (documented per case), and the
annotations with :mod:`monitoring.go_templates`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.alert_rules import alert_groups, all_alerts
from monitoring.go_templates import humanize_duration, humanize_percentage
from monitoring.promql import number
from monitoring.recording_rules import (CLIENT_HISTOGRAM, CLIENT_OK_OUTCOME, NVIDIA_K8S_ONPREM_QUEUE_QUERY,
                                        QUEUE_PER_REQUEST_FLEET, QUEUE_PER_REQUEST_POD, TRAINING_CHECKPOINT_AGE,
                                        TRAINING_RUNNING, recording_groups)
from monitoring.slo import SLOConfig, duration_seconds
from monitoring.targets import TRITON

STEP_S = 15                      # spacing of the input samples
TRITON_0 = 'instance="triton-0:8002",job="triton"'
TRITON_1 = 'instance="triton-1:8002",job="triton"'
CLIENTS = 'instance="locust-worker-1:9646",job="clients"'
UNLISTED_MODEL = "unlisted_model"


@dataclass
class Case:
    """One input scenario and what must (not) fire in it."""

    name: str
    series: dict[str, str] = field(default_factory=dict)
    alert_tests: list[dict] = field(default_factory=list)
    expr_tests: list[dict] = field(default_factory=list)

    def as_yaml(self, steps: int) -> dict:
        out: dict = {
            "name": self.name,
            "interval": f"{STEP_S}s",
            "input_series": [{"series": s, "values": v.format(n=steps)} for s, v in self.series.items()],
        }
        if self.alert_tests:
            out["alert_rule_test"] = self.alert_tests
        if self.expr_tests:
            out["promql_expr_test"] = self.expr_tests
        return out


def counter(per_step: float) -> str:
    """A counter growing by ``per_step`` every sample, for the whole test."""
    return f"0+{number(per_step)}x{{n}}"


def const(value: float) -> str:
    return f"{number(value)}x{{n}}"


class Expect:
    """Mirrors of Prometheus' arithmetic for the inputs above (windows aligned with samples: no extrapolation)."""

    def __init__(self, slo: SLOConfig):
        self.window_s = duration_seconds(slo.rate_window)

    def rate(self, per_step: float) -> float:
        return (per_step * (self.window_s / STEP_S)) / self.window_s


def fired(alertname: str, eval_time: str, alerts: list[tuple[dict, dict]]) -> dict:
    return {"eval_time": eval_time, "alertname": alertname,
            "exp_alerts": [{"exp_labels": labels, "exp_annotations": ann} for labels, ann in alerts]}


def description(slo: SLOConfig, alertname: str) -> str:
    """Descriptions hold no template expressions, so the rule's own text is what Prometheus renders."""
    return next(a.description for a in all_alerts(slo) if a.alert == alertname)


def silent(alertname: str, eval_time: str) -> dict:
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": []}


def _seconds(text: str) -> int:
    return int(duration_seconds(text))


def _t(seconds: float) -> str:
    return f"{int(seconds)}s"


def _latency_cases(slo: SLOConfig, x: Expect) -> list[Case]:
    name = "InferenceLatencyP99AboveSLO"
    model, budget = sorted(slo.models.items())[0] if slo.models else (UNLISTED_MODEL, None)
    budget_s = budget.p99_latency_seconds if budget else slo.latency.default_p99_seconds
    default_s = slo.latency.default_p99_seconds
    fire_at = _seconds(slo.latency.for_) + _seconds(slo.rate_window) + 120
    early = _seconds(slo.latency.for_) // 2

    slow_us = round(2 * budget_s * 1e6)        # triton-0 is slow, triton-1 fast: the max over servers must alert
    triton_p99 = slow_us / 1e6
    # Client histogram of the unlisted model: every call in (lower, upper], so histogram_quantile(0.99) interpolates
    # lower + (upper - lower) * (rank / count) with rank = 0.99 * count.
    lower, upper = default_s / 2, default_s * 2
    count = x.rate(100)
    client_p99 = lower + (upper - lower) * ((0.99 * count) / count)

    def summary(m: str, value: float, source: str, slo_s: float) -> dict:
        return {"summary": f"{m}: p99 latency {humanize_duration(value)} ({source}) is above its SLO of "
                           f"{humanize_duration(slo_s)}",
                "description": description(slo, name)}

    def client_buckets(m: str, counts: dict[str, int]) -> dict[str, str]:
        labels = f'model="{m}",protocol="grpc",outcome="{CLIENT_OK_OUTCOME}",{CLIENTS}'
        out = {f'{CLIENT_HISTOGRAM}_bucket{{le="{le}",{labels}}}': counter(c) for le, c in counts.items()}
        out[f"{CLIENT_HISTOGRAM}_count{{{labels}}}"] = counter(counts["+Inf"])
        return out

    q99 = 'quantile="0.99",version="1"'
    slow = Case(f"{name}: one slow server (triton) and slow callers (client) break their SLOs", {
        f'nv_inference_request_summary_us{{model="{model}",{q99},{TRITON_0}}}': const(slow_us),
        f'nv_inference_request_summary_us{{model="{model}",{q99},{TRITON_1}}}': const(round(budget_s * 1e6 / 4)),
        f'nv_inference_request_success{{model="{model}",version="1",{TRITON_0}}}': counter(10),
        **client_buckets(UNLISTED_MODEL, {number(lower): 0, number(upper): 100, "+Inf": 100}),
    })
    slow.alert_tests = [
        silent(name, _t(early)),
        fired(name, _t(fire_at), [
            ({"severity": "page", "model": model, "quantile": "0.99", "source": "triton"},
             summary(model, triton_p99, "triton", budget_s)),
            ({"severity": "page", "model": UNLISTED_MODEL, "quantile": "0.99", "source": "client"},
             summary(UNLISTED_MODEL, client_p99, "client", default_s)),
        ]),
    ]
    slow.expr_tests = [{
        "expr": "model:slo_request_latency_p99_seconds", "eval_time": _t(fire_at),
        "exp_samples": ([{"labels": f'model:slo_request_latency_p99_seconds{{model="{m}"}}',
                          "value": s.p99_latency_seconds} for m, s in sorted(slo.models.items())]
                        + [{"labels": f'model:slo_request_latency_p99_seconds{{model="{UNLISTED_MODEL}"}}',
                            "value": default_s}]),
    }]
    fast = Case(f"{name}: p99 within the SLO on every server and for callers", {
        f'nv_inference_request_summary_us{{model="{model}",{q99},{TRITON_0}}}': const(round(budget_s * 1e6 / 2)),
        f'nv_inference_request_success{{model="{model}",version="1",{TRITON_0}}}': counter(10),
        **client_buckets(model, {number(budget_s / 2): 100, number(budget_s): 100, "+Inf": 100}),
    }, alert_tests=[silent(name, _t(fire_at))])
    return [slow, fast]


def _error_cases(slo: SLOConfig, x: Expect) -> list[Case]:
    name = "InferenceErrorRatioHigh"
    model = sorted(slo.models)[0] if slo.models else UNLISTED_MODEL
    fire_at = _seconds(slo.errors.for_) + _seconds(slo.rate_window) + 120
    # Failures as a fraction of all requests: 3x and 2x the allowed ratio, in whole requests per 100, at most 99
    # (the SLO keeps max_ratio below 0.99, so both stay above it and the successes never go negative).
    pct_triton = min(99, max(1, round(slo.errors.max_ratio * 300)))
    pct_client = min(99, max(1, round(slo.errors.max_ratio * 200)))
    triton_ratio = x.rate(pct_triton) / (x.rate(100 - pct_triton) + x.rate(pct_triton))
    client_ratio = x.rate(pct_client) / (x.rate(100 - pct_client) + x.rate(pct_client))

    def annotations(value: float, source: str) -> dict:
        return {"summary": f"{model}: {humanize_percentage(value)} of requests fail ({source}); the SLO allows "
                           f"{number(slo.errors.max_ratio * 100)}%",
                "description": description(slo, name)}

    def triton(success: int, failed: int) -> dict[str, str]:
        base = f'model="{model}",version="1",{TRITON_0}'
        return {f"nv_inference_request_success{{{base}}}": counter(success),
                f'nv_inference_request_failure{{{base},reason="BACKEND"}}': counter(failed),
                f'nv_inference_request_failure{{{base},reason="REJECTED"}}': counter(0)}

    def client(ok: int, failed: int | None) -> dict[str, str]:
        base = f'model="{model}",protocol="http",{CLIENTS}'
        out = {f'{CLIENT_HISTOGRAM}_count{{{base},outcome="{CLIENT_OK_OUTCOME}"}}': counter(ok)}
        if failed is not None:
            out[f'{CLIENT_HISTOGRAM}_count{{{base},outcome="error"}}'] = counter(failed)
        return out

    failing = Case(f"{name}: failures above the SLO inside Triton and at the callers",
                   {**triton(100 - pct_triton, pct_triton), **client(100 - pct_client, pct_client)})
    failing.alert_tests = [
        silent(name, _t(_seconds(slo.errors.for_) // 2)),
        fired(name, _t(fire_at), [
            ({"severity": "page", "model": model, "source": "triton"}, annotations(triton_ratio, "triton")),
            ({"severity": "page", "model": model, "source": "client"}, annotations(client_ratio, "client")),
        ]),
    ]
    healthy = Case(f"{name}: no failures (callers never saw an error series) must read as ratio 0",
                   {**triton(100, 0), **client(100, None)})
    healthy.alert_tests = [silent(name, _t(fire_at))]
    healthy.expr_tests = [{"expr": "model:inference_errors:ratio", "eval_time": _t(fire_at), "exp_samples": [
        {"labels": f'model:inference_errors:ratio{{model="{model}",source="client"}}', "value": 0},
        {"labels": f'model:inference_errors:ratio{{model="{model}",source="triton"}}', "value": 0},
    ]}]
    return [failing, healthy]


def _readiness_cases(slo: SLOConfig) -> list[Case]:
    name = "ModelNotReady"
    models = slo.ready_models
    if not models:
        return []
    fire_at = _seconds(slo.readiness.for_) + 120
    missing, present = models[0], models[1:]
    serving = {f'nv_inference_request_success{{model="{m}",version="1",{TRITON_0}}}': counter(5) for m in present}
    broken = Case(f"{name}: a live Triton serves every required model but {missing}; a down Triton is not blamed", {
        f"up{{{TRITON_0}}}": const(1),
        f"up{{{TRITON_1}}}": const(0),
        **serving,
    })
    broken.alert_tests = [
        silent(name, _t(_seconds(slo.readiness.for_) // 2)),
        fired(name, _t(fire_at), [(
            {"severity": "page", "model": missing, "instance": "triton-0:8002", "job": TRITON.name},
            {"summary": f"triton-0:8002: Triton is up but model {missing} is not ready",
             "description": description(slo, name)},
        )]),
    ]
    ready = Case(f"{name}: every required model is served", {
        f"up{{{TRITON_0}}}": const(1),
        **{f'nv_inference_request_success{{model="{m}",version="1",{TRITON_0}}}': counter(5) for m in models},
    }, alert_tests=[silent(name, _t(fire_at))])
    return [broken, ready]


def _queue_cases(slo: SLOConfig, x: Expect) -> list[Case]:
    name = "InferenceQueueDominatesCompute"
    q = slo.queue
    model = sorted(slo.models)[0] if slo.models else UNLISTED_MODEL
    fire_at = _seconds(q.for_) + _seconds(slo.rate_window) + 120
    busy_requests = max(10, int(q.min_request_rate * STEP_S * 4))     # 4x the minimum rate
    quiet_requests = int(q.min_request_rate * STEP_S / 2) if q.min_request_rate > 0 else None
    compute_us = {"input": 1000, "infer": 8000, "output": 1000}           # per request

    def load(m: str, requests: int, queue_factor: float) -> dict[str, str]:
        base = f'model="{m}",version="1",{TRITON_0}'
        out = {f"nv_inference_request_success{{{base}}}": counter(requests),
               f"nv_inference_queue_duration_us{{{base}}}": counter(round(queue_factor * 10000) * requests)}
        for phase, us in compute_us.items():
            out[f"nv_inference_compute_{phase}_duration_us{{{base}}}"] = counter(us * requests)
        return out

    factor = 3 * q.max_queue_to_compute_ratio
    queue_mean = x.rate(round(factor * 10000) * busy_requests) / x.rate(busy_requests) / 1e6
    compute_mean = ((x.rate(1000 * busy_requests) + x.rate(8000 * busy_requests)) + x.rate(1000 * busy_requests)) \
        / x.rate(busy_requests) / 1e6
    saturated = Case(f"{name}: requests queue {number(factor)}x longer than they compute", load(model, busy_requests,
                                                                                                factor))
    saturated.alert_tests = [
        silent(name, _t(_seconds(q.for_) // 2)),
        fired(name, _t(fire_at), [(
            {"severity": "warning", "model": model},
            {"summary": f"{model}: requests wait {queue_mean / compute_mean:.1f}x longer in Triton's queue than they "
                        "compute",
             "description": description(slo, name)},
        )]),
    ]
    healthy_series = load(model, busy_requests, q.max_queue_to_compute_ratio / 2)
    if quiet_requests:
        healthy_series.update(load(UNLISTED_MODEL, quiet_requests, factor))
    healthy = Case(f"{name}: short queues, and long queues only below {number(q.min_request_rate)} req/s",
                   healthy_series, alert_tests=[silent(name, _t(fire_at))])
    return [saturated, healthy]


def _recording_cases(slo: SLOConfig, x: Expect) -> list[Case]:
    """Exact values of the per-model means and the batch size (numbers chosen to be exact in binary)."""
    at = _t(_seconds(slo.rate_window) + 120)
    base = f'model="m",version="1",{TRITON_0}'
    case = Case("recording rules: batch size, mean queue and request time from Triton's counters", {
        f"nv_inference_request_success{{{base}}}": counter(32),
        f"nv_inference_count{{{base}}}": counter(128),
        f"nv_inference_exec_count{{{base}}}": counter(32),
        f"nv_inference_queue_duration_us{{{base}}}": counter(32 * 1024),
        f"nv_inference_request_duration_us{{{base}}}": counter(32 * 4096),
    })
    case.expr_tests = [
        {"expr": "model:inference_batch_size:mean", "eval_time": at,
         "exp_samples": [{"labels": 'model:inference_batch_size:mean{model="m"}',
                          "value": x.rate(128) / x.rate(32)}]},
        {"expr": "model:inference_queue_seconds:mean", "eval_time": at,
         "exp_samples": [{"labels": 'model:inference_queue_seconds:mean{model="m"}',
                          "value": x.rate(32 * 1024) / x.rate(32) / 1e6}]},
        {"expr": "model:inference_request_seconds:mean", "eval_time": at,
         "exp_samples": [{"labels": 'model:inference_request_seconds:mean{model="m"}',
                          "value": x.rate(32 * 4096) / x.rate(32) / 1e6}]},
    ]
    return [case]


def _autoscaling_cases(slo: SLOConfig, x: Expect) -> list[Case]:
    """Queue time per request with several models loaded: the case that breaks NVIDIA's k8s-onprem query (#8979).

    Pod a serves three models: ``busy`` gets 8 requests per sample that wait 32 ms each in the queue, ``idle_1`` and
    ``idle_2`` are loaded but get nothing. Pod b is loaded the same way and idle. The right answer is 32 ms on pod a,
    0 on pod b and 32 ms for the fleet (only pod a's requests queued). NVIDIA's query averages one ratio per series,
    six of them, five zero: it reports about a sixth, and an HPA reading it never scales out.
    """
    at_s = _seconds(slo.rate_window) + 120
    at = _t(at_s)
    k8s = 'job="triton-metrics",namespace="inference"'
    pods = {"a": f'{k8s},pod="triton-a",instance="10.0.0.1:8002"', "b": f'{k8s},pod="triton-b",instance="10.0.0.2:8002"'}
    requests, queue_us = 8, 32768      # per sample and per request; powers of two keep every division exact
    series = {}
    for pod, labels in pods.items():
        for model in ("busy", "idle_1", "idle_2"):
            per_step = requests if (pod, model) == ("a", "busy") else 0
            base = f'model="{model}",version="1",{labels}'
            series[f"nv_inference_request_success{{{base}}}"] = counter(per_step)
            series[f"nv_inference_queue_duration_us{{{base}}}"] = counter(per_step * queue_us)
    right = x.rate(requests * queue_us) / x.rate(requests) / 1e6
    # NVIDIA's query at the same instant: delta over 30 s spans two sample steps (windows aligned with samples).
    steps_30s = 30 // STEP_S
    nvidia = (requests * queue_us * steps_30s) / (1 + requests * steps_30s) / 6
    case = Case("autoscaling: queue time per request is right with several models loaded, where NVIDIA's query "
                "under-reports by the number of loaded models (#8979)", series)
    case.expr_tests = [
        {"expr": QUEUE_PER_REQUEST_POD, "eval_time": at, "exp_samples": [
            {"labels": f'{QUEUE_PER_REQUEST_POD}{{{pods["a"]}}}', "value": right},
            {"labels": f'{QUEUE_PER_REQUEST_POD}{{{pods["b"]}}}', "value": 0}]},
        {"expr": QUEUE_PER_REQUEST_FLEET, "eval_time": at, "exp_samples": [
            {"labels": f'{QUEUE_PER_REQUEST_FLEET}{{{k8s}}}', "value": right}]},
        {"expr": NVIDIA_K8S_ONPREM_QUEUE_QUERY, "eval_time": at, "exp_samples": [{"labels": "{}", "value": nvidia}]},
    ]
    return [case]


def _gpu_cases(slo: SLOConfig) -> list[Case]:
    name = "GPUMemoryHigh"
    limit = slo.gpu.max_memory_ratio
    fire_at = _seconds(slo.gpu.for_) + 120
    high = min(0.99, limit + (1 - limit) / 2) if limit < 1 else None
    if high is None:
        return []
    total_mib = 81920
    used_mib = round(total_mib * high)
    dcgm_ratio = used_mib / (used_mib + (total_mib - used_mib))
    mig_total = 10 * 2**30
    mig_used = round(mig_total * high)
    dcgm = 'gpu="0",UUID="GPU-aaaa",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="node-1",' \
           'instance="dcgm-exporter:9400",job="dcgm-exporter"'
    nvml = ('gpu="1",gpu_uuid="GPU-bbbb",gpu_instance="1",name="NVIDIA A100-SXM4-80GB MIG 1g.10gb",'
            'instance="gpu-exporter:9401",job="gpu-exporter"')
    triton = 'gpu_uuid="GPU-aaaa",instance="triton-0:8002",job="triton"'
    gpu_description = description(slo, name)
    full = Case(f"{name}: a whole GPU (dcgm-exporter says full, Triton less) and a MIG instance (NVML exporter)", {
        f"DCGM_FI_DEV_FB_USED{{{dcgm}}}": const(used_mib),
        f"DCGM_FI_DEV_FB_FREE{{{dcgm}}}": const(total_mib - used_mib),
        f"nv_gpu_memory_used_bytes{{{triton}}}": const(total_mib * 2**20 // 2),
        f"nv_gpu_memory_total_bytes{{{triton}}}": const(total_mib * 2**20),
        f"gpu_memory_used_bytes{{{nvml}}}": const(mig_used),
        f"gpu_memory_total_bytes{{{nvml}}}": const(mig_total),
    })
    full.alert_tests = [
        silent(name, _t(_seconds(slo.gpu.for_) // 2)),
        fired(name, _t(fire_at), [
            ({"severity": "warning", "gpu_uuid": "GPU-aaaa"},
             {"summary": f"GPU GPU-aaaa: {humanize_percentage(dcgm_ratio)} of its memory is used",
              "description": gpu_description}),
            ({"severity": "warning", "gpu_uuid": "GPU-bbbb", "gpu_instance": "1"},
             {"summary": f"GPU GPU-bbbb (MIG instance 1): {humanize_percentage(mig_used / mig_total)} of its memory "
                         "is used",
              "description": gpu_description}),
        ]),
    ]
    half = Case(f"{name}: half of the memory used", {
        f"DCGM_FI_DEV_FB_USED{{{dcgm}}}": const(total_mib // 2),
        f"DCGM_FI_DEV_FB_FREE{{{dcgm}}}": const(total_mib // 2),
        f"gpu_memory_used_bytes{{{nvml}}}": const(mig_total // 2),
        f"gpu_memory_total_bytes{{{nvml}}}": const(mig_total),
    }, alert_tests=[silent(name, _t(fire_at))])
    return [full, half]


def _target_cases(slo: SLOConfig) -> list[Case]:
    name = "ScrapeTargetDown"
    fire_at = _seconds(slo.targets.for_) + 120
    paging = set(slo.targets.paging_jobs)
    jobs = {"triton": "triton:8002", "gpu-exporter": "gpu-exporter:9401", "trainer": "trainer:9402"}
    down = ("triton", "gpu-exporter")
    case = Case(f"{name}: triton and gpu-exporter stop answering, trainer keeps answering", {
        f'up{{instance="{inst}",job="{job}"}}': const(0 if job in down else 1) for job, inst in jobs.items()})
    case.alert_tests = [
        silent(name, _t(_seconds(slo.targets.for_) // 2)),
        fired(name, _t(fire_at), [
            ({"severity": "page" if job in paging else "warning", "instance": jobs[job], "job": job},
             {"summary": f"{job} target {jobs[job]} is down", "description": description(slo, name)})
            for job in down
        ]),
    ]
    healthy = Case(f"{name}: every target answers",
                   {f'up{{instance="{inst}",job="{job}"}}': const(1) for job, inst in jobs.items()},
                   alert_tests=[silent(name, _t(fire_at))])
    return [case, healthy]


def _training_cases(slo: SLOConfig) -> list[Case]:
    name = "TrainingStalled"
    limit = slo.training.max_seconds_without_checkpoint
    fire_at = int(limit) + _seconds(slo.training.for_) + 120
    digits = 'model="digits",instance="trainer:9402",job="trainer"'
    textclf = 'model="textclf",instance="trainer:9402",job="trainer"'
    # The age grows by one sample interval per sample from t=0, so at time T it reads T seconds.
    stalled = Case(f"{name}: a running training that never checkpoints again", {
        f"{TRAINING_CHECKPOINT_AGE}{{{digits}}}": f"0+{STEP_S}x{{n}}",
        f"{TRAINING_RUNNING}{{{digits}}}": const(1),
    })
    stalled.alert_tests = [
        silent(name, _t(limit / 2)),
        fired(name, _t(fire_at), [(
            {"severity": "warning", "model": "digits"},
            {"summary": f"training of digits wrote no checkpoint for {humanize_duration(fire_at)}",
             "description": description(slo, name)},
        )]),
    ]
    healthy = Case(f"{name}: checkpoints keep coming, and an idle sidecar (training_running 0) is not stalled", {
        f"{TRAINING_CHECKPOINT_AGE}{{{digits}}}": const(30),
        f"{TRAINING_RUNNING}{{{digits}}}": const(1),
        f"{TRAINING_CHECKPOINT_AGE}{{{textclf}}}": f"0+{STEP_S}x{{n}}",
        f"{TRAINING_RUNNING}{{{textclf}}}": const(0),
    }, alert_tests=[silent(name, _t(fire_at))])
    return [stalled, healthy]


def rule_test_cases(slo: SLOConfig) -> list[Case]:
    x = Expect(slo)
    return [*_latency_cases(slo, x), *_error_cases(slo, x), *_readiness_cases(slo), *_queue_cases(slo, x),
            *_gpu_cases(slo), *_target_cases(slo), *_training_cases(slo), *_recording_cases(slo, x),
            *_autoscaling_cases(slo, x)]


def rule_tests_document(slo: SLOConfig, rule_files: list[str]) -> dict:
    """The promtool test file: every case, with input series long enough for its latest evaluation."""
    cases = rule_test_cases(slo)
    latest = max(duration_seconds(t["eval_time"]) for c in cases for t in c.alert_tests + c.expr_tests)
    steps = int(latest // STEP_S) + 2
    return {
        "rule_files": rule_files,
        "evaluation_interval": f"{STEP_S}s",
        # Recording groups first: an alert then reads the series recorded at the same instant, so the values in its
        # annotations are exact (a real Prometheus runs groups independently; there an alert may lag one interval).
        "group_eval_order": [g.name for g in recording_groups(slo)] + [g.name for g in alert_groups(slo)],
        "tests": [case.as_yaml(steps) for case in cases],
    }


def alert_coverage(document: dict) -> dict[str, dict[str, int]]:
    """For each alert name: how many test evaluations expect it firing and how many expect it silent."""
    coverage: dict[str, dict[str, int]] = {}
    for test in document["tests"]:
        for case in test.get("alert_rule_test", []):
            entry = coverage.setdefault(case["alertname"], {"firing": 0, "silent": 0})
            entry["firing" if case["exp_alerts"] else "silent"] += 1
    return coverage
