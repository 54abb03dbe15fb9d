"""docker-compose.yml (GPU host) and docker-compose.cpu.yml (CPU host) are valid and keep the safe defaults.

Validated with docker-compose 1.29's ``config`` (no engine needed; CI installs it from Debian). The checks read the
*resolved* configuration, so they see what compose would actually run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (CI installs it from Debian: "
                                                        "apt-get install docker-compose)")
SECRETS = {"TRITON_ADMIN_TOKEN": "ci-token", "GRAFANA_ADMIN_PASSWORD": "ci-password"}


def resolved(*files: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "BIND_ADDRESS"}
    args = [COMPOSE] + [part for f in files for part in ("-f", f)] + ["config"]
    return subprocess.run(args, cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True)


def services(*files: str) -> dict:
    result = resolved(*files, env=SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def active(svcs: dict) -> dict:
    return {name: svc for name, svc in svcs.items() if not svc.get("profiles")}


def gpu_reserved(svc: dict) -> bool:
    devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any("gpu" in d.get("capabilities", []) for d in devices)


def test_the_gpu_stack_has_every_service_with_gpus_a_healthcheck_and_the_build_before_triton():
    svcs = active(services("docker-compose.yml"))
    assert {"prepare-models", "triton", "trainer", "builder-watch", "prometheus", "grafana", "dcgm-exporter",
            "gpu-exporter", "locust-master", "locust-worker"} <= set(svcs)
    triton = svcs["triton"]
    assert gpu_reserved(triton) and gpu_reserved(svcs["prepare-models"]) and gpu_reserved(svcs["dcgm-exporter"])
    assert triton["image"].startswith("inference-platform/triton:") and "--model-config-name=tensorrt" in triton["command"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["prepare-models"]["condition"] == "service_completed_successfully"
    assert triton["environment"]["TRITON_ADMIN_TOKEN"] == "ci-token"  # restricted through clients.token_exec
    assert svcs["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "ci-password"


def test_the_cpu_override_parks_every_gpu_service_and_keeps_the_network_names():
    svcs = services("docker-compose.yml", "docker-compose.cpu.yml")
    running = active(svcs)
    assert not [name for name, svc in running.items() if gpu_reserved(svc)], "a CPU host cannot reserve GPUs"
    for parked in ("triton", "prepare-models", "trainer", "builder-watch", "dcgm-exporter", "gpu-exporter"):
        assert svcs[parked]["profiles"] == ["gpu"], parked
    aliases = {alias for svc in running.values()
               for alias in (svc.get("networks", {}).get("default") or {}).get("aliases", [])}
    assert {"triton", "trainer", "gpu-exporter"} <= aliases, "Prometheus and Locust address these names"
    assert running["triton-cpu"]["command"][:3] == ["python", "-m", "clients"]


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")])
def test_published_ports_bind_to_loopback_unless_asked_and_secrets_have_no_default(files):
    for name, svc in active(services(*files)).items():
        for port in svc.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} beyond this host by default"
    missing = resolved(*files, env={"GRAFANA_ADMIN_PASSWORD": "x"})
    assert missing.returncode != 0 and "set TRITON_ADMIN_TOKEN in .env" in missing.stderr
    missing = resolved(*files, env={"TRITON_ADMIN_TOKEN": "x"})
    assert missing.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD in .env" in missing.stderr
    exposed = yaml.safe_load(resolved(*files, env={**SECRETS, "BIND_ADDRESS": "0.0.0.0"}).stdout)["services"]
    assert any(str(p).startswith("0.0.0.0:") for svc in exposed.values() for p in svc.get("ports", []))


def test_the_compose_prometheus_and_grafana_files_exist_where_they_are_mounted():
    svcs = services("docker-compose.yml")
    for name in ("prometheus", "grafana"):
        for volume in svcs[name]["volumes"]:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(("/", ".")):
                assert Path(source).exists(), f"{name} mounts {source}, which is missing"


@pytest.mark.parametrize("files, service", [(("docker-compose.yml",), "triton"),
                                            (("docker-compose.yml", "docker-compose.cpu.yml"), "triton-cpu")])
def test_triton_shares_the_host_ipc_namespace_for_system_shared_memory(files, service):
    """A client in another container (or on the host) registers /dev/shm regions Triton must open by name."""
    triton = services(*files)[service]
    assert triton.get("ipc") == "host" and "shm_size" not in triton


def test_the_gpu_triton_loads_version_compatible_plans():
    """Plans built with tensorrt.version_compatible = true need Triton's TensorRT backend to allow host code."""
    command = services("docker-compose.yml")["triton"]["command"]
    assert "--backend-config=tensorrt,version-compatible=true" in command


def test_no_service_puts_the_admin_token_on_a_command_line():
    """The host's `ps` shows every container's command line: the token travels in the environment, and the GPU
    Triton starts through clients.token_exec, which hides it from the process list (tests/clients/test_token_exec.py)."""
    for files in (("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")):
        for name, svc in services(*files).items():
            command = " ".join(svc.get("command") or []) + " ".join(svc.get("entrypoint") or [])
            assert SECRETS["TRITON_ADMIN_TOKEN"] not in command, f"{name} passes the admin token on its command line"
    triton = services("docker-compose.yml")["triton"]
    assert triton["command"][:4] == ["python3", "-m", "clients.token_exec", "tritonserver"]
    assert triton["environment"]["TRITON_ADMIN_TOKEN"] == SECRETS["TRITON_ADMIN_TOKEN"]
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert "clients/admin_token.py clients/token_exec.py" in dockerfile and "PYTHONPATH=/opt/platform" in dockerfile
