"""The Kubernetes deployment's settings (``deploy/kubernetes/settings.toml``): every value an overlay changes, as data.

Why a typed file rather than values edited in YAML patches: the numbers depend on each other (the startup probe must
outlast the engines' load time, the termination grace must cover the pre-stop drain plus Triton's exit timeout, the
replica bounds must be ordered, an ``s3://`` repository needs a credentials Secret), and a wrong combination is only
discovered on a cluster, minutes into a rollout. Here it is refused before anything is rendered, with one line naming
the setting (``settings.toml: overlays.gpu.replicas: Input should be greater than or equal to 1 (got -1)``). The
kustomize patches are generated from this model (:mod:`deploy.manifests`), never edited by hand.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config import load_config
from common.errors import UserError

KUBERNETES_DIR = Path(__file__).resolve().parent / "kubernetes"
DEFAULT_SETTINGS_FILE = KUBERNETES_DIR / "settings.toml"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_S3 = re.compile(r"^s3://(?P<endpoint>[^/]+/)?(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<prefix>.*))?$")
_PVC = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(/(?P<subpath>.*))?$")
_TRITON_VERSION = re.compile(r"^(?P<year>\d{2})\.(?P<month>\d{2})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    cpu: str = Field(description="CPU request = limit (a Kubernetes quantity, e.g. '4' or '1500m')")
    memory: str = Field(description="memory request = limit (e.g. '16Gi')")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu limit; 0 on the CPU path")

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '2', '500m', '8Gi')")
        return value


class Overlay(_Strict):
    """One way of running Triton: the GPU (TensorRT) path, the CPU (python backend) path, or KServe."""

    kind: str = Field("deployment", pattern="^(deployment|kserve)$",
                      description="a plain Deployment (base/triton) or a KServe InferenceService")
    image: str = Field(min_length=1)
    triton_version: str = Field(description="NGC release of the image, YY.MM (histogram latencies from 24.11)")
    model_config_name: str = Field("", description="--model-config-name ('' = config.pbtxt, the CPU path)")
    repository: str = Field(description="s3://[host:port/]bucket/prefix (Triton reads it itself) or pvc://claim[/sub]")
    s3_region: str = "us-east-1"
    replicas: int = Field(ge=1, description="replicas before the autoscaler acts")
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    resources: Resources
    engine_load_seconds: int = Field(gt=0, description="measured time from start to every model ready")
    startup_budget_seconds: int = Field(gt=0, description="how long the startup probe waits before restarting")
    startup_probe_period_seconds: int = Field(10, gt=0)
    drain_seconds: int = Field(10, ge=0, description="pre-stop pause while Services and balancers drop the pod")
    exit_timeout_seconds: int = Field(30, ge=1, description="Triton's --exit-timeout-secs: in-flight requests finish")
    autoscaler: str = Field("hpa", pattern="^(hpa|keda)$")
    launcher: str = Field("tritonserver", pattern="^(tritonserver|clients-serve)$",
                          description="tritonserver (NGC image, on PATH) or `python -m clients serve` (the CPU image: "
                                      "it finds the wheel's Triton, prepares the python backend and keeps the token "
                                      "off the process list)")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not (_S3.match(value) or _PVC.match(value)):
            raise ValueError(f"{value!r} is neither s3://[host:port/]bucket/prefix nor pvc://claim[/subpath]")
        return value

    @field_validator("triton_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _TRITON_VERSION.match(value):
            raise ValueError(f"{value!r} is not an NGC release like '24.12'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Overlay":
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas must satisfy min_replicas <= replicas <= max_replicas (got {self.min_replicas}"
                             f" <= {self.replicas} <= {self.max_replicas})")
        if self.startup_budget_seconds < self.engine_load_seconds:
            raise ValueError(f"startup_budget_seconds {self.startup_budget_seconds} is shorter than "
                             f"engine_load_seconds {self.engine_load_seconds}: every start would be killed before its "
                             "engines finish loading")
        if self.startup_probe_period_seconds > self.startup_budget_seconds:
            raise ValueError(f"startup_probe_period_seconds {self.startup_probe_period_seconds} is longer than "
                             f"startup_budget_seconds {self.startup_budget_seconds}")
        return self

    @property
    def uses_s3(self) -> bool:
        return self.repository.startswith("s3://")

    @property
    def histogram_latencies(self) -> bool:
        """Triton >= 24.11 (server 2.52) has ``nv_inference_first_response_histogram_ms``; earlier has summaries only."""
        match = _TRITON_VERSION.match(self.triton_version)
        return (int(match["year"]), int(match["month"])) >= (24, 11)

    @property
    def startup_failure_threshold(self) -> int:
        return math.ceil(self.startup_budget_seconds / self.startup_probe_period_seconds)

    @property
    def termination_grace_seconds(self) -> int:
        return self.drain_seconds + self.exit_timeout_seconds + 5

    def pvc(self) -> tuple[str, str]:
        match = _PVC.match(self.repository)
        return match["claim"], match["subpath"] or ""


class Secrets(_Strict):
    """Names of Secrets created on the cluster (never committed): see deploy/kubernetes/README.md."""

    admin_token: str = Field("", description="Secret with key 'token': the header value model control requires")
    s3_credentials: str = Field("", description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


class Autoscaling(_Strict):
    metric_name: str = Field("triton_queue_seconds_per_request", pattern="^[a-z_][a-z0-9_]*$",
                             description="custom metric name prometheus-adapter serves to the HPA")
    target_queue_seconds: float = Field(gt=0, description="average queue time per request the autoscaler aims at")
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600)
    scale_up_stabilization_seconds: int = Field(0, ge=0, le=3600)
    scale_down_pods_per_minute: int = Field(1, ge=1)
    prometheus_url: str = Field("http://kube-prometheus-stack-prometheus.monitoring:9090",
                                description="the Prometheus KEDA queries")


class DeploySettings(_Strict):
    namespace: str = Field("inference")
    secrets: Secrets = Secrets()
    autoscaling: Autoscaling
    overlays: dict[str, Overlay] = Field(min_length=1)

    @field_validator("namespace")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a DNS label (lower-case letters, digits, '-')")
        return value

    @field_validator("overlays")
    @classmethod
    def _names(cls, value: dict[str, Overlay]) -> dict[str, Overlay]:
        for name in value:
            if not _DNS_LABEL.match(name) or name == "pipeline":
                raise ValueError(f"overlay name {name!r} is not a DNS label other than 'pipeline' (rendered/pipeline.yaml "
                                 "holds the pipeline's Jobs)")
        return value


def check_references(settings: DeploySettings, source: str) -> None:
    """Secrets the manifests will reference must be named: a missing one would leave pods in CreateContainerConfigError."""
    if not settings.secrets.admin_token:
        raise UserError(f"{source}: secrets.admin_token is empty; name the Secret (key 'token') that holds the "
                        "admin token restricting model control")
    for name, overlay in settings.overlays.items():
        if overlay.uses_s3 and not settings.secrets.s3_credentials:
            raise UserError(f"{source}: secrets.s3_credentials is empty but overlays.{name}.repository is "
                            f"{overlay.repository}; name the Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def load_settings(path: str | Path | None = None) -> DeploySettings:
    path = Path(path or DEFAULT_SETTINGS_FILE)
    settings = load_config(DeploySettings, path)
    check_references(settings, path.name)
    return settings
