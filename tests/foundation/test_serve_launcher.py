"""clients.serve: pre-flight errors that name the model, the file and the field; safe defaults; nothing left behind."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from clients.serve import ADMIN_TOKEN_ENV, ServerConfig, TritonServer, first_error
from common.errors import UserError
from common.net import free_port

ROOT = Path(__file__).resolve().parents[2]

ECHO_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)])
                for r in requests]
'''

ECHO_CONFIG = '''name: "echo"
backend: "python"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_FP32 dims: [2] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [2] }]
instance_group [{ kind: KIND_CPU count: 1 }]
'''


@pytest.fixture()
def repository(tmp_path) -> Path:
    (tmp_path / "repo" / "echo" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (tmp_path / "repo" / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    return tmp_path / "repo"


def config(repository: Path, tmp_path: Path, **fields) -> ServerConfig:
    return ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                        log_file=tmp_path / "server.log", **fields)


def test_preflight_names_the_model_the_file_and_the_field(repository, tmp_path):
    with pytest.raises(UserError, match=r"model repository .*missing does not exist"):
        TritonServer(config(tmp_path / "missing", tmp_path)).preflight()
    (repository / "echo" / "config.pbtxt").write_text(ECHO_CONFIG.replace("max_batch_size", "max_batch_sise"))
    with pytest.raises(UserError) as info:
        TritonServer(config(repository, tmp_path)).preflight()
    assert "model 'echo'" in str(info.value) and "echo/config.pbtxt:3:1" in str(info.value)
    assert "max_batch_sise" in str(info.value)
    (repository / "echo" / "config.pbtxt").write_text(ECHO_CONFIG.replace('name: "echo"', 'name: "other"'))
    with pytest.raises(UserError, match=r"model 'echo': .*field 'name' is 'other' but must equal the folder name 'echo'"):
        TritonServer(config(repository, tmp_path)).preflight()


def test_a_taken_port_is_one_clear_sentence(repository, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(repository, tmp_path).model_copy(update={"grpc_port": port})
        with pytest.raises(UserError, match=rf"port {port} \(grpc_port\) on 127\.0\.0\.1 is already in use.*--grpc-port"):
            TritonServer(cfg).preflight()


def test_exposing_the_server_requires_an_admin_token_which_restricts_the_admin_apis(repository, tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(UserError, match=rf"binding Triton to 0\.0\.0\.0 exposes it .*set {ADMIN_TOKEN_ENV}"):
        TritonServer(config(repository, tmp_path, host="0.0.0.0")).preflight()
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret")
    command = TritonServer(config(repository, tmp_path, host="0.0.0.0")).command()
    assert "--http-restricted-api=model-repository,shared-memory,trace,logging:triton-admin-token=s3cret" in command
    assert "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:triton-admin-token=s3cret" in command
    monkeypatch.delenv(ADMIN_TOKEN_ENV)
    loopback = TritonServer(config(repository, tmp_path)).command()
    assert "--http-address=127.0.0.1" in loopback and "--grpc-address=127.0.0.1" in loopback
    assert "--metrics-address=127.0.0.1" in loopback


def test_a_model_triton_cannot_load_is_reported_in_one_line_from_its_log(repository, tmp_path):
    (repository / "echo" / "1" / "model.py").write_text("raise ImportError('no such module: onnxruntim')\n")
    with pytest.raises(UserError) as info:
        TritonServer(config(repository, tmp_path, ready_timeout_s=120)).start()
    message = str(info.value)
    assert message.startswith("Triton failed to load model 'echo' version 1") and "server log" in message
    assert "\n" not in message
    assert first_error('E1122 "failed to start HTTP service: Unavailable - Socket \'0.0.0.0:8000\' already in use"') \
        == "Triton failed to start its HTTP service: Unavailable - Socket '0.0.0.0:8000' already in use"


def _tritonservers_below(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "tritonserver"]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_the_launcher_serves_the_real_triton_and_sigint_or_kill_9_leave_no_server(repository, tmp_path):
    cfg = config(repository, tmp_path)
    args = [sys.executable, "-m", "clients", "serve", "--repository", str(repository), "--http-port", str(cfg.http_port),
            "--grpc-port", str(cfg.grpc_port), "--metrics-port", str(cfg.metrics_port), "--log-file",
            str(tmp_path / "server.log")]
    for stop in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        output = "".join(lines)
        assert "ready: triton 2.51.0" in output, output
        assert f"HTTP     http://127.0.0.1:{cfg.http_port}" in output and f"gRPC     127.0.0.1:{cfg.grpc_port}" in output
        servers = _tritonservers_below(proc.pid)
        assert servers, "the launcher started no tritonserver"
        proc.send_signal(stop)
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"tritonserver left running after {stop.name}"
        if stop == signal.SIGINT:
            assert proc.returncode == 0
