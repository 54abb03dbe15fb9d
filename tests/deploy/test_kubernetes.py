"""deploy/kubernetes: every overlay renders with the real ``kubectl kustomize``, every object validates (Kubernetes API
schemas via kubernetes-validate, custom resources via the committed CRD schemas), committed files match a fresh
render, and settings that make no sense are refused with one line naming the setting.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.errors import UserError
from deploy import manifests, render
from deploy.settings import DEFAULT_SETTINGS_FILE, KUBERNETES_DIR, load_settings
from deploy.validate import crd_schemas, validate_object

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None,
                                reason="kubectl is not installed (it renders the Kustomize overlays)")
SETTINGS = load_settings()


def rendered(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERNETES_DIR / "rendered" / f"{name}.yaml").read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def run_deploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A scratch copy of deploy/kubernetes to break."""
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES_DIR, copy)
    return copy


def test_every_overlay_renders_validates_and_matches_the_committed_files():
    result = run_deploy("render", "--check")
    assert result.returncode == 0, result.stderr
    assert f"all {len(manifests.generated_files(SETTINGS)) + len(SETTINGS.overlays) + 1}" in result.stdout
    assert {p.stem for p in (KUBERNETES_DIR / "rendered").glob("*.yaml")} == {*SETTINGS.overlays, "pipeline"}


def test_a_hand_edit_of_a_rendered_file_or_a_settings_change_is_reported_stale(tree: Path):
    rendered_file = tree / "rendered" / "cpu.yaml"
    rendered_file.write_text(rendered_file.read_text().replace("replicas: 2", "replicas: 3", 1))
    with pytest.raises(UserError, match=r"stale: rendered/cpu.yaml; run `python -m deploy render`"):
        render.main(["--check", "--dir", str(tree)])
    settings = tree / "settings.toml"
    shutil.copy(KUBERNETES_DIR / "rendered" / "cpu.yaml", rendered_file)
    settings.write_text(settings.read_text().replace("max_replicas = 6", "max_replicas = 7"))
    with pytest.raises(UserError, match=r"overlays/cpu/settings-patch.yaml, rendered/cpu.yaml"):
        render.main(["--check", "--dir", str(tree), "--settings", str(settings)])


@pytest.mark.parametrize("old, new, message", [
    ("replicas = 2\nmin_replicas = 2\nmax_replicas = 6", "replicas = -1\nmin_replicas = 2\nmax_replicas = 6",
     r"overlays\.cpu\.replicas: Input should be greater than or equal to 1 \(got -1\)"),
    ("engine_load_seconds = 30\nstartup_budget_seconds = 120", "engine_load_seconds = 300\nstartup_budget_seconds = 120",
     r"overlays\.cpu: Value error, startup_budget_seconds 120 is shorter than engine_load_seconds 300"),
    ("startup_probe_period_seconds = 5", "startup_probe_period_seconds = 600",
     r"overlays\.cpu: Value error, startup_probe_period_seconds 600 is longer than startup_budget_seconds 120"),
    ('s3_credentials = "triton-s3-credentials"', 's3_credentials = ""',
     r"secrets\.s3_credentials is empty but overlays\.\S+\.repository is s3://"),
    ('repository = "s3://minio.storage.svc:9000/models/repo"\nreplicas = 2\nmin_replicas = 2\nmax_replicas = 6',
     'repository = "http://minio/models"\nreplicas = 2\nmin_replicas = 2\nmax_replicas = 6',
     r"overlays\.cpu\.repository: Value error, 'http://minio/models' is neither s3://"),
])
def test_settings_that_make_no_sense_fail_with_one_line_naming_the_setting(tree: Path, old, new, message):
    settings = tree / "settings.toml"
    text = settings.read_text()
    assert old in text
    settings.write_text(text.replace(old, new))
    before = {p: p.read_text() for p in (tree / "rendered").glob("*.yaml")}
    result = run_deploy("render", "--dir", str(tree), "--settings", str(settings))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert {p: p.read_text() for p in (tree / "rendered").glob("*.yaml")} == before   # nothing written


def test_a_manifest_reading_an_undeclared_secret_or_with_negative_replicas_is_refused():
    deployment = by_kind(rendered("gpu"), "Deployment")[0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "typo"
    with pytest.raises(UserError, match="reads Secret 'typo', which settings.toml does not declare under"):
        validate_object(broken, SETTINGS, "gpu")
    negative = yaml.safe_load(yaml.safe_dump(deployment))
    negative["spec"]["replicas"] = -2
    with pytest.raises(UserError, match="spec.replicas is -2; a replica count cannot be negative"):
        validate_object(negative, SETTINGS, "gpu")
    short = yaml.safe_load(yaml.safe_dump(deployment))
    short["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"] = 2
    with pytest.raises(UserError, match=r"startupProbe allows 20 s, less than overlays.gpu.engine_load_seconds"):
        validate_object(short, SETTINGS, "gpu")


def test_schemas_reject_unknown_fields_and_bad_custom_resources():
    deployment = by_kind(rendered("cpu"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(UserError, match="'livenesProbe' was unexpected"):
        validate_object(deployment, SETTINGS, "cpu")
    scaled = by_kind(rendered("gpu-keda"), "ScaledObject")[0]
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"] = 7200
    with pytest.raises(UserError, match="stabilizationWindowSeconds: 7200 is greater than the maximum of 3600"):
        validate_object(scaled, SETTINGS, "gpu-keda")
    service = by_kind(rendered("kserve"), "InferenceService")[0]
    service["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = 5
    with pytest.raises(UserError, match="InferenceService/triton spec.predictor: .*imagePullPolicy"):
        validate_object(service, SETTINGS, "kserve")
    assert {kind for _, kind in crd_schemas()} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject",
                                                  "InferenceService", "PyTorchJob"}


# ids say "overlay-...": a bare "gpu" id would be read as the gpu marker by tests/conftest.py and skipped on CPU
@pytest.mark.parametrize("name", ["gpu", "cpu", "gpu-keda"], ids=lambda name: f"overlay-{name}")
def test_triton_deployment_is_safe_to_run_and_to_stop(name: str):
    docs = rendered(name)
    overlay = SETTINGS.overlays[name]
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and triton["securityContext"]["readOnlyRootFilesystem"]
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["periodSeconds"] * triton["startupProbe"]["failureThreshold"] \
        >= overlay.startup_budget_seconds >= overlay.engine_load_seconds
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["terminationGracePeriodSeconds"] > triton["lifecycle"]["preStop"]["sleep"]["seconds"] \
        + overlay.exit_timeout_seconds
    assert {f"--exit-timeout-secs={overlay.exit_timeout_seconds}", f"--exit-timeout={overlay.exit_timeout_seconds}"} \
        & set(triton["args"])
    assert triton["resources"]["requests"] and triton["resources"]["limits"]
    assert ("nvidia.com/gpu" in triton["resources"]["limits"]) == (overlay.resources.gpus > 0)
    if overlay.launcher == "tritonserver":
        assert ("--metrics-config=histogram_latencies=true" in triton["args"]) == overlay.histogram_latencies
        # the token is restricted by clients.token_exec from the environment, never on the container's command line
        assert triton["command"] == ["python3", "-m", "clients.token_exec", "tritonserver"]
        assert not any("restricted" in a or "TRITON_ADMIN_TOKEN" in a for a in triton["args"])
        assert f"--model-repository={overlay.repository}" in triton["args"]
    else:  # clients serve restricts the admin APIs with $TRITON_ADMIN_TOKEN itself and refuses 0.0.0.0 without it
        assert triton["command"] == ["python", "-m", "clients", "serve"] and "--host=0.0.0.0" in triton["args"]
        assert f"--repository={overlay.repository}" in triton["args"] and "--model-control=explicit" in triton["args"]
    assert {e["name"] for e in triton["env"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TRITON_ADMIN_TOKEN"}
    assert {p["port"] for s in by_kind(docs, "Service") for p in s["spec"]["ports"]} == {8000, 8001, 8002}
    assert by_kind(docs, "PodDisruptionBudget") and by_kind(docs, "NetworkPolicy") and by_kind(docs, "ServiceMonitor")


def test_gpu_path_uses_tensorrt_and_cpu_path_the_python_backend():
    gpu = by_kind(rendered("gpu"), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    cpu = by_kind(rendered("cpu"), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--model-config-name=tensorrt" in gpu["args"] and gpu["command"][-1] == "tritonserver"
    assert not any(a.startswith(("--model-config-name", "--config-name")) for a in cpu["args"])


def test_autoscaling_reads_queue_time_per_request_with_scale_down_stabilisation():
    a = SETTINGS.autoscaling
    hpa = by_kind(rendered("gpu"), "HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == a.metric_name and metric["target"]["averageValue"] == "20m"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == a.scale_down_stabilization_seconds
    keda = rendered("gpu-keda")
    assert not by_kind(keda, "HorizontalPodAutoscaler")      # KEDA owns its HPA; two would fight
    trigger = by_kind(keda, "ScaledObject")[0]["spec"]["triggers"][0]
    assert trigger["metricType"] == "Value" and "job:inference_queue_seconds_per_request:mean" in trigger["metadata"][
        "query"]
    rule = by_kind(rendered("gpu"), "PrometheusRule")[0]
    records = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert records == {"instance:inference_queue_seconds_per_request:mean", "job:inference_queue_seconds_per_request:mean"}
    adapter = yaml.safe_load((KUBERNETES_DIR / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["as"] == a.metric_name


def test_kserve_overlay_runs_the_same_triton_reading_s3_itself():
    docs = rendered("kserve")
    service = by_kind(docs, "InferenceService")[0]
    predictor = service["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["args"][:1] == [f"--model-repository={SETTINGS.overlays['kserve'].repository}"]
    assert by_kind(docs, "ScaledObject")[0]["spec"]["scaleTargetRef"]["name"] == manifests.KSERVE_DEPLOYMENT
    assert by_kind(docs, "PodMonitor") and not by_kind(docs, "Deployment")


def test_quantity():
    assert manifests.quantity(0.02) == "20m"
    assert manifests.quantity(0.0015) == "1500u"


def test_the_default_settings_file_is_the_committed_one():
    assert DEFAULT_SETTINGS_FILE == KUBERNETES_DIR / "settings.toml"


def test_pipeline_jobs_train_build_roll_out_and_load_test():
    docs = rendered("pipeline")
    job = by_kind(docs, "PyTorchJob")[0]
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2 and worker["template"]["spec"]["containers"][0]["command"][0] == "torchrun"
    sidecar = [c for c in worker["template"]["spec"]["initContainers"] if c.get("restartPolicy") == "Always"]
    assert sidecar and "aws s3 sync /runs" in sidecar[0]["command"][-1]          # checkpoints go to object storage
    builder = next(j for j in by_kind(docs, "Job") if j["metadata"]["name"].startswith("build"))
    pod = builder["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "builder"   # what the NetworkPolicy admits
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "python -m builders publish" in script and "python -m deploy converge" in script
    loadtest = next(j for j in by_kind(docs, "Job") if j["metadata"]["name"].startswith("loadtest"))
    assert loadtest["spec"]["template"]["metadata"]["labels"]["inference-platform/client"] == "true"
    assert by_kind(docs, "PodMonitor")


def test_a_pytorchjob_with_a_broken_pod_template_is_refused():
    job = by_kind(rendered("pipeline"), "PyTorchJob")[0]
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "2"
    with pytest.raises(UserError, match=r"PyTorchJob/train-textclf spec.pytorchReplicaSpecs.Worker.template.spec"):
        validate_object(job, SETTINGS)
    job = by_kind(rendered("pipeline"), "PyTorchJob")[0]
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "Sometimes"
    with pytest.raises(UserError, match="'Sometimes' is not one of"):
        validate_object(job, SETTINGS)


def test_a_manifest_that_fails_validation_writes_nothing(tree: Path):
    deployment = tree / "base" / "triton" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("revisionHistoryLimit: 3", "revisionHistoryLimit: 3\n"
                                                         "  replicaz: 2"))
    settings = tree / "settings.toml"
    settings.write_text(settings.read_text().replace("max_replicas = 6", "max_replicas = 7"))
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"overlay \S+: Deployment/triton: spec: Additional properties are not allowed "
                                        r"\('replicaz' was unexpected\)"):
        render.main(["--dir", str(tree), "--settings", str(settings)])
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
