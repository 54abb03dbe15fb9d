"""Validate rendered manifests offline: Kubernetes objects against the API schemas, custom resources against their
CRDs, and the rules between objects that no schema checks.

* built-in kinds: ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown fields are errors);
* custom resources (ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject, InferenceService, PyTorchJob): the
  ``openAPIV3Schema`` of the trimmed CRDs in ``deploy/kubernetes/crds/`` with jsonschema, and the pod templates they
  embed against the Kubernetes PodSpec schema;
* cross-object rules: every object in the settings' namespace, every Secret a pod reads declared under
  ``[secrets]`` in settings.toml, replica counts not negative, a startup probe that outlasts the engines' load time.

Each failure is one line naming the overlay, the object and the field.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

import yaml

from common.errors import UserError

from deploy.settings import KUBERNETES_DIR, DeploySettings

KUBERNETES_VERSION = "1.32.0"          # kubectl on our machines; the schemas ship with kubernetes-validate
CRD_DIR = KUBERNETES_DIR / "crds"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


@functools.lru_cache(maxsize=1)
def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD file in ``crd_dir``."""
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _where(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def _validate_builtin(obj: dict, where: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise UserError(f"{where}: {_path(exc)}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise UserError(f"{where}: {obj.get('apiVersion')} {obj.get('kind')} is not a Kubernetes "
                        f"{KUBERNETES_VERSION} API object and has no CRD schema in {CRD_DIR}") from None


def _validate_custom(obj: dict, schema: dict, where: str) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    error = next(iter(sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        raise UserError(f"{where}: {_path(error)}: {error.message}")


def embedded_pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(field path, PodSpec) of every pod a custom resource describes, for validation as Kubernetes objects."""
    kind, spec = obj.get("kind"), obj.get("spec", {})
    if kind == "PyTorchJob":
        for role, replica in spec.get("pytorchReplicaSpecs", {}).items():
            yield f"spec.pytorchReplicaSpecs.{role}.template.spec", replica.get("template", {}).get("spec", {})
    elif kind == "InferenceService":
        predictor = spec.get("predictor", {})
        kserve_only = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "labels", "annotations",
                       "triton", "model", "logger", "batcher", "canaryTrafficPercent", "timeout",
                       "containerConcurrency", "deploymentStrategy"}
        yield "spec.predictor", {k: v for k, v in predictor.items() if k not in kserve_only}


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(field path, PodSpec) of every pod an object creates."""
    kind, spec = obj.get("kind"), obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield "spec.template.spec", spec.get("template", {}).get("spec", {})
    yield from embedded_pod_specs(obj)


def _secret_refs(pod: dict) -> Iterator[str]:
    for group in ("containers", "initContainers"):
        for c in pod.get(group, []) or []:
            for env in c.get("env", []) or []:
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield ref["name"]
            for source in c.get("envFrom", []) or []:
                if "secretRef" in source:
                    yield source["secretRef"]["name"]
    for volume in pod.get("volumes", []) or []:
        if "secret" in volume:
            yield volume["secret"]["secretName"]


def check_rules(obj: dict, settings: DeploySettings, overlay: str | None, where: str) -> None:
    """What no schema says: namespace, declared Secrets, replica counts, the startup budget."""
    kind, spec = obj.get("kind"), obj.get("spec", {}) or {}
    namespace = obj.get("metadata", {}).get("namespace")
    if kind not in CLUSTER_SCOPED and namespace != settings.namespace:
        raise UserError(f"{where}: metadata.namespace is {namespace!r}, expected settings.toml namespace "
                        f"{settings.namespace!r}")
    for field in ("replicas", "minReplicas", "maxReplicas", "minReplicaCount", "maxReplicaCount"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            raise UserError(f"{where}: spec.{field} is {value}; a replica count cannot be negative")
    declared = {name for name in (settings.secrets.admin_token, settings.secrets.s3_credentials) if name}
    engine_load = settings.overlays[overlay].engine_load_seconds if overlay in settings.overlays else None
    for field, pod in pod_specs(obj):
        for secret in _secret_refs(pod):
            if secret not in declared:
                raise UserError(f"{where}: {field} reads Secret {secret!r}, which settings.toml does not declare "
                                f"under [secrets] (declared: {', '.join(sorted(declared)) or 'none'})")
        for c in pod.get("containers", []) or []:
            probe = c.get("startupProbe")
            if probe and engine_load:
                budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
                if budget < engine_load:
                    raise UserError(f"{where}: {field}.containers[{c['name']}].startupProbe allows {budget} s, less "
                                    f"than overlays.{overlay}.engine_load_seconds = {engine_load}")


def validate_object(obj: dict, settings: DeploySettings, overlay: str | None = None, label: str = "") -> None:
    where = f"{label}{_where(obj)}"
    schema = crd_schemas().get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        _validate_builtin(obj, where)
    else:
        _validate_custom(obj, schema, where)
        for field, pod in embedded_pod_specs(obj):
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"},
                        "template": {"spec": pod}}
            _validate_builtin(template, f"{where} {field}")
    check_rules(obj, settings, overlay, where)


def documents(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise UserError(f"{source}: a document without apiVersion/kind: {str(doc)[:80]}")
    return docs


def validate_overlay(settings: DeploySettings, overlay: str, text: str) -> list[dict]:
    """Every object of one rendered overlay; the objects when all are valid."""
    docs = documents(text, f"overlay {overlay}")
    for obj in docs:
        validate_object(obj, settings, overlay, label=f"overlay {overlay}: ")
    return docs
