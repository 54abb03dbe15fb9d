"""The dashboards' panels as data: one definition read by the Grafana generator and by the PNG renderer.

Why one list: a panel's query written twice drifts; here the Grafana JSON (``monitoring.dashboards``), the PNG panels
(``monitoring.render``) and the real-Prometheus test all read the same :class:`Panel` objects, and the thresholds
drawn as lines come from ``slo.toml``.

Queries read recorded series (``monitoring.recording_rules``) wherever one exists, so a panel shows exactly what an
alert compares. ``$model`` is the dashboards' model variable (a regex); the PNG renderer and the tests substitute
:data:`ALL_MODELS` for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from monitoring.promql import number
from monitoring.slo import SLOConfig
from monitoring.targets import CLIENTS, DCGM, GPU_EXPORTER, PROMETHEUS, TRAINER, TRITON

MODEL_VARIABLE = "$model"
ALL_MODELS = ".+"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str                     # Grafana legend format ("{{model}} ({{source}})")
    slo_line: bool = False          # drawn as a dashed red reference line, not as data


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


@dataclass(frozen=True)
class Panel:
    key: str                        # stable identifier: PNG file name, Grafana panel order
    title: str
    description: str
    unit: str                       # Grafana unit id: s, reqps, percentunit, short, watt, celsius, bytes
    queries: tuple[Query, ...]
    jobs: tuple[str, ...]           # scrape jobs that feed it, named when it has no data
    threshold: Threshold | None = None
    per_model: bool = False         # Grafana repeats it for each selected model; the PNG draws one plot per model
    log_scale: bool = False         # log y axis: latencies of a few ms stay readable next to a 100 ms SLO line
    main: bool = True               # among the panels `python -m monitoring panels` renders
    cpu_note: str | None = None     # why it is empty on a CPU-only host, when it is
    width: int = 8                  # Grafana grid width (24 = full row)

    def exprs(self, model_regex: str = ALL_MODELS) -> list[str]:
        return [q.expr.replace(MODEL_VARIABLE, model_regex) for q in self.queries]


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    model_variable_query: str       # label_values(...) for the $model variable
    rows: tuple[Row, ...]

    @property
    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]


GPU_NOTE = "empty on CPU-only hosts (no GPU)"
GPU_JOBS = (DCGM.name, GPU_EXPORTER.name, TRITON.name)
M = f'model=~"{MODEL_VARIABLE}"'


def inference_dashboard(slo: SLOConfig) -> DashboardSpec:
    latency = Panel(
        "latency", "Latency p50 / p95 / p99 vs SLO",
        "client: the load generators' histograms summed over every process and server (what callers see). "
        "triton: the slowest server's own sliding-window summary (an upper bound, never an average of servers).",
        "s",
        (Query(f"model:inference_request_latency_seconds{{{M}}}", "{{source}} q{{quantile}}"),
         Query(f"model:slo_request_latency_p99_seconds{{{M}}}", "SLO p99 budget", slo_line=True)),
        (CLIENTS.name, TRITON.name), per_model=True, log_scale=True, width=12)
    rate = Panel(
        "request_rate", "Request rate", "Requests per second per model, counted by Triton and by the callers.",
        "reqps", (Query(f"model:inference_requests:rate{{{M}}}", "{{model}} ({{source}})"),),
        (TRITON.name, CLIENTS.name), width=12)
    errors = Panel(
        "error_ratio", "Error ratio", "Failed / all requests. Triton does not count requests it rejects before "
        "running them (bad shapes); the callers do.",
        "percentunit", (Query(f"model:inference_errors:ratio{{{M}}}", "{{model}} ({{source}})"),),
        (TRITON.name, CLIENTS.name), threshold=Threshold(slo.errors.max_ratio, "SLO"))
    queue = Panel(
        "queue_vs_compute", "Queue vs compute time (mean per request)",
        "Time requests wait in Triton's scheduler queue against the time the backend computes. Queue above compute "
        "means the model is saturated.",
        "s", (Query(f"model:inference_queue_seconds:mean{{{M}}}", "{{model}} queue"),
              Query(f"model:inference_compute_seconds:mean{{{M}}}", "{{model}} compute")),
        (TRITON.name,))
    batch = Panel(
        "batch_size", "Executed batch size (mean)", "Inferences per model execution: how well dynamic batching "
        "fills batches.", "short", (Query(f"model:inference_batch_size:mean{{{M}}}", "{{model}}"),), (TRITON.name,))
    pending = Panel(
        "pending_requests", "Pending requests", "Requests queued in Triton right now.", "short",
        (Query(f"model:inference_pending_requests:sum{{{M}}}", "{{model}}"),), (TRITON.name,), main=False)
    per_server = Panel(
        "p99_per_server", "p99 per Triton server", "Each server's own p99 (Triton's summary): find the slow server.",
        "s", (Query(f'instance_model:inference_request_latency_seconds{{{M}, quantile="0.99"}}',
                    "{{instance}} {{model}}"),), (TRITON.name,), main=False)
    retries = Panel(
        "client_retries", "Client retries", "Retries the clients made after retryable failures.", "short",
        (Query(f"model:client_retries:rate{{{M}}}", "{{model}}"),), (CLIENTS.name,), main=False)
    cpu = Panel(
        "cpu", "CPU utilisation and memory (Triton hosts)", "From Triton's /proc readings on each server host.",
        "percentunit", (Query("nv_cpu_utilization", "{{instance}} CPU"),
                        Query("nv_cpu_memory_used_bytes / nv_cpu_memory_total_bytes", "{{instance}} memory")),
        (TRITON.name,))
    gpu_util = Panel(
        "gpu_utilization", "GPU utilisation", "Highest of dcgm-exporter, Triton and the NVML exporter per GPU "
        "(MIG instances separately where the source reports them).", "percentunit",
        (Query("max by (gpu_uuid, gpu_instance) (gpu:utilization:ratio)", "{{gpu_uuid}} {{gpu_instance}}"),),
        GPU_JOBS, cpu_note=GPU_NOTE)
    gpu_mem = Panel(
        "gpu_memory", "GPU memory used", "Used / total memory per GPU or MIG instance.", "percentunit",
        (Query("max by (gpu_uuid, gpu_instance) (gpu:memory_used:ratio)", "{{gpu_uuid}} {{gpu_instance}}"),),
        GPU_JOBS, threshold=Threshold(slo.gpu.max_memory_ratio, "alert"), cpu_note=GPU_NOTE)
    gpu_power = Panel(
        "gpu_power", "GPU power", "Board power draw per GPU.", "watt",
        (Query("max by (gpu_uuid) (gpu:power_usage:watts)", "{{gpu_uuid}}"),), GPU_JOBS, cpu_note=GPU_NOTE)
    gpu_temp = Panel(
        "gpu_temperature", "GPU temperature", "Core temperature per GPU.", "celsius",
        (Query("max by (gpu_uuid) (gpu:temperature:celsius)", "{{gpu_uuid}}"),), (DCGM.name, GPU_EXPORTER.name),
        main=False, cpu_note=GPU_NOTE)
    gpus_seen = Panel(
        "gpus_present", "GPUs seen by the NVML exporter", "0 means the exporter runs but found no GPU (it says so "
        "instead of failing).", "short", (Query("sum by (instance) (gpu_exporter_gpus)", "{{instance}}"),),
        (GPU_EXPORTER.name,), main=False)
    targets = Panel(
        "targets_up", "Scrape targets up", "1 = Prometheus scraped the target, 0 = down: its panels have no data.",
        "short", (Query("up", "{{job}} {{instance}}"),), (PROMETHEUS.name,), width=12)
    alerts = Panel(
        "alerts_firing", "Alerts firing", "Firing alerts by name (none is good news).", "short",
        (Query('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),), (PROMETHEUS.name,),
        main=False, width=12)
    return DashboardSpec(
        uid="inference-slo",
        title="Inference service / SLO overview",
        description=("Is p99 within the SLO, and why not? Budgets and thresholds come from monitoring/slo.toml; "
                     "generated by `python -m monitoring generate`, do not edit in Grafana."),
        model_variable_query="label_values(model:inference_requests:rate, model)",
        rows=(
            Row("Is p99 within the SLO?", (latency, rate, errors)),
            Row("Why not? Inside Triton", (queue, batch, pending, per_server, retries)),
            Row("Hardware", (cpu, gpu_util, gpu_mem, gpu_power, gpu_temp, gpus_seen)),
            Row("Scrape targets and alerts", (targets, alerts)),
        ),
    )


def training_dashboard(slo: SLOConfig) -> DashboardSpec:
    def gauge(key: str, title: str, metric: str, unit: str, description: str, main: bool = False) -> Panel:
        return Panel(key, title, description, unit, (Query(f"{metric}{{{M}}}", "{{model}}"),), (TRAINER.name,),
                     main=main, cpu_note="empty while no training runs")

    since = Panel(
        "training_checkpoint_age", "Time since the last checkpoint", "A running training that stops writing "
        "checkpoints is stalled (an idle sidecar is not); the line is the alert threshold.", "s",
        (Query(f"model:training_seconds_since_checkpoint:max{{{M}}}", "{{model}}"),), (TRAINER.name,),
        threshold=Threshold(slo.training.max_seconds_without_checkpoint, "stalled"), main=False,
        cpu_note="empty while no training runs")
    return DashboardSpec(
        uid="training",
        title="Inference platform / Training",
        description="Training progress from the trainer's metrics sidecar; generated by `python -m monitoring "
                    "generate`.",
        model_variable_query="label_values(training_step, model)",
        rows=(Row("Training", (
            Panel("training_loss", "Training loss", "Mean training loss over the last progress interval, and the "
                  "validation loss after each epoch.", "short",
                  (Query(f"training_loss{{{M}}}", "{{model}} train"),
                   Query(f"training_val_loss{{{M}}}", "{{model}} validation")), (TRAINER.name,),
                  cpu_note="empty while no training runs"),
            gauge("training_step", "Training step", "training_step", "short", "Optimizer steps so far.", main=True),
            gauge("training_accuracy", "Validation accuracy", "training_accuracy", "percentunit",
                  "Held-out accuracy after the latest epoch."),
            gauge("training_running", "Training running", "training_running", "short",
                  "1 while training, 0 while the sidecar waits for new data."),
            gauge("training_throughput", "Training throughput", "training_samples_per_second", "short",
                  "Samples per second."),
            since,
        )),),
    )


def dashboards(slo: SLOConfig) -> list[DashboardSpec]:
    return [inference_dashboard(slo), training_dashboard(slo)]


def main_panels(slo: SLOConfig) -> list[Panel]:
    """The panels the PNG command renders, in reading order."""
    return [p for d in dashboards(slo) for p in d.panels if p.main]


def threshold_text(threshold: Threshold, unit: str) -> str:
    value = f"{number(threshold.value * 100)}%" if unit == "percentunit" else number(threshold.value)
    return f"{threshold.label} {value}"
