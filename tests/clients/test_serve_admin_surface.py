"""The launcher's admin surface against the real Triton (issue 17, items 9-12).

* model control is always restricted: without ``$TRITON_ADMIN_TOKEN`` each start makes a token, writes it 0600 for
  local clients and the builders' rollout, and a model load with a ``file:`` override (Triton running Python the
  caller sent) is refused without it;
* the token is not in the process list (``ps -o args``) once Triton has read it;
* every address flag counts for the exposure check, also in ``extra_args``;
* ``serve --config FILE`` uses the file's ``repository``; a flag overrides it only when given.
"""
from __future__ import annotations

import argparse
import base64
import json
import stat
import subprocess
import urllib.error
import urllib.request

import pytest

from clients import admin_token
from clients.serve import ADMIN_HEADER, ADMIN_TOKEN_ENV, ServerConfig, TritonServer, add_arguments, config_from_args
from common.errors import UserError
from tests.clients.conftest import server_config

# A python model whose initialize() leaves a marker file: if it ever runs, Triton executed code sent by the caller.
MARKER_MODEL = """
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("ran")
    def execute(self, requests):
        return []
"""
MARKER_CONFIG = {"name": "toy", "backend": "python", "max_batch_size": 0,
                 "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                 "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}


def load_with_file_override(server: TritonServer, marker, headers: dict[str, str]) -> int:
    """POST /v2/repository/models/toy/load with a ``file:1/model.py`` override; the HTTP status."""
    body = json.dumps({"parameters": {
        "config": json.dumps(MARKER_CONFIG),
        "file:1/model.py": base64.b64encode(MARKER_MODEL.format(marker=str(marker)).encode()).decode(),
    }}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/toy/load", data=body,
                                     headers={"Content-Type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def process_args(pid: int) -> str:
    return subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    """Explicit model control, loopback, no token in the environment: what live rollouts run."""
    root = tmp_path_factory.mktemp("admin-surface")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ADMIN_TOKEN_ENV, raising=False)
        config = server_config(root).model_copy(update={
            "model_control": "explicit", "load_models": ["toy"], "admin_token_dir": root / "tokens"})
        server = TritonServer(config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_file_override_load_is_refused_without_the_token_and_the_token_is_in_a_private_file(explicit_server,
                                                                                             tmp_path):
    server = explicit_server
    token_dir = server.config.admin_token_dir
    http_file = admin_token.token_file(server.config.http_port, token_dir)
    grpc_file = admin_token.token_file(server.config.grpc_port, token_dir)
    assert server.token_files == [http_file, grpc_file]
    for path in (http_file, grpc_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == server.admin_token
    assert stat.S_IMODE(token_dir.stat().st_mode) == 0o700
    # what local clients and the builders' rollout read, by the port of the URL they use
    assert admin_token.read_token_for(server.http_url, token_dir) == server.admin_token
    assert admin_token.read_token_for(server.grpc_url, token_dir) == server.admin_token
    assert admin_token.read_token_for(f"10.0.0.7:{server.config.http_port}", token_dir) is None  # never sent away

    marker = tmp_path / "marker"
    assert load_with_file_override(server, marker, {}) == 403
    assert load_with_file_override(server, marker, {ADMIN_HEADER: "wrong"}) == 403
    assert not marker.exists()
    # the right token (read from the file) is accepted: the refusal above is the restriction, not a broken request
    assert load_with_file_override(server, marker, {ADMIN_HEADER: http_file.read_text().strip()}) == 200
    assert marker.read_text() == "ran"


@pytest.mark.slow
def test_the_token_is_not_in_the_process_list(explicit_server):
    args = process_args(explicit_server.process.pid)
    assert "--http-restricted-api=" in args and "tritonserver" in args
    assert explicit_server.admin_token not in args
    assert explicit_server.cmdline_exposure is None


@pytest.mark.slow
def test_a_token_from_the_environment_is_hidden_too_and_no_file_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "given-secret-4711")
    config = server_config(tmp_path).model_copy(update={"admin_token_dir": tmp_path / "tokens"})
    with TritonServer(config) as server:
        assert "given-secret-4711" not in process_args(server.process.pid)
        assert server.token_files == [] and not (tmp_path / "tokens").exists()
        request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST",
                                         headers={ADMIN_HEADER: "given-secret-4711"})
        with urllib.request.urlopen(request, timeout=10) as response:  # Triton still has the real token
            assert {m["name"] for m in json.loads(response.read())} >= {"toy"}


@pytest.mark.slow
def test_token_files_are_removed_when_the_server_stops(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    config = server_config(tmp_path).model_copy(update={"admin_token_dir": tmp_path / "tokens", "load_models": []})
    server = TritonServer(config).start()
    files = list(server.token_files)
    assert all(p.is_file() for p in files)
    server.stop()
    assert not any(p.exists() for p in files)


@pytest.mark.parametrize("extra_args", [
    ["--http-address=0.0.0.0"],
    ["--grpc-address", "0.0.0.0"],
    ["--metrics-address=192.168.1.5"],
    ["--http-address=0.0.0.0", "--grpc-address=0.0.0.0"],
    ["--allow-sagemaker=true"],
])
def test_every_address_flag_counts_for_the_exposure_check(tmp_path, monkeypatch, extra_args):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    config = server_config(tmp_path).model_copy(update={"extra_args": extra_args})
    assert config.exposed
    with pytest.raises(UserError, match=f"set {ADMIN_TOKEN_ENV}"):
        TritonServer(config).preflight()


def test_loopback_address_flags_are_not_exposure(tmp_path):
    config = server_config(tmp_path).model_copy(update={"extra_args": ["--http-address=127.0.0.1", "--log-info=true"]})
    assert not config.exposed


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_config_file_repository_is_used_and_a_flag_overrides_it_only_when_given(tmp_path):
    config_file = tmp_path / "serve.toml"
    config_file.write_text(f'repository = "{tmp_path / "from-file"}"\nhttp_port = 9100\n')
    assert config_from_args(serve_args("--config", str(config_file))).repository == tmp_path / "from-file"
    assert config_from_args(serve_args("--config", str(config_file), "--repository", "other")).repository.name == "other"
    assert config_from_args(serve_args("--config", str(config_file), "--http-port", "9200")).http_port == 9200
    assert config_from_args(serve_args()).repository.name == "model_repository"  # neither: the usual default
    assert ServerConfig().repository.name == "model_repository"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_local_clients_and_the_rollout_use_the_generated_token(explicit_server, protocol, monkeypatch):
    from builders.rollout import load_published
    from clients import TritonClient
    from clients.errors import ClientError

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    url = explicit_server.grpc_url if protocol == "grpc" else explicit_server.http_url
    monkeypatch.setenv(admin_token.TOKEN_DIR_ENV, str(explicit_server.config.admin_token_dir))
    with TritonClient(url, protocol) as client:
        assert "toy" in {m["name"] for m in client.models()}  # the repository index is a restricted API
    load_published(explicit_server.http_url, ["toy"], "toy", 1, timeout_s=60)  # model control, as a rollout does
    monkeypatch.setenv(admin_token.TOKEN_DIR_ENV, str(explicit_server.config.admin_token_dir / "elsewhere"))
    with TritonClient(url, protocol) as client, pytest.raises(ClientError, match="restricted"):
        client.models()
