"""``python -m clients.token_exec``: the GPU compose stack's Triton gets its admin token from the environment and the
host's process list never keeps it (issue 17, item 10, for a Triton started directly rather than by the launcher).

Run against the real tritonserver from the nvidia-pytriton wheel, with the command line the launcher would use minus
its restriction flags."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clients.admin_token import ADMIN_HEADER, ADMIN_TOKEN_ENV
from clients.serve import TritonServer
from common.triton_install import ensure_python_backend_stub, server_environment
from tests.clients.conftest import server_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = "compose-secret-90210"


def wrapper(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clients.token_exec", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def repository_index(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # not listening yet
        return 0


def children(pid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


@pytest.mark.slow
def test_the_token_restricts_the_admin_apis_and_leaves_the_process_list(tmp_path, monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    config = server_config(tmp_path).model_copy(update={"exit_timeout_s": 15})  # time to unload: exit status 0
    ensure_python_backend_stub()
    command = TritonServer(config).command(token=None)
    assert not any("restricted" in arg for arg in command)
    proc = wrapper(command, {**server_environment(), ADMIN_TOKEN_ENV: SECRET})
    try:
        url, deadline = f"127.0.0.1:{config.http_port}", time.monotonic() + 120
        while repository_index(url, {ADMIN_HEADER: SECRET}) != 200:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "Triton behind clients.token_exec was not ready in 120 s"
            time.sleep(0.5)
        assert repository_index(url, {}) == 403 and repository_index(url, {ADMIN_HEADER: "wrong"}) == 403
        (server_pid,) = children(proc.pid)
        arguments = Path(f"/proc/{server_pid}/cmdline").read_bytes()
        assert b"--http-restricted-api=" in arguments and SECRET.encode() not in arguments
        assert SECRET.encode() not in Path(f"/proc/{server_pid}/environ").read_bytes()
        proc.send_signal(signal.SIGTERM)  # forwarded: Triton stops and the wrapper exits with its status
        code = proc.wait(timeout=60)
        assert code == 0, proc.stdout.read().decode(errors="replace")[-1500:]
        assert not Path(f"/proc/{server_pid}").exists() or "Z" in Path(f"/proc/{server_pid}/stat").read_text().split()[2]
        assert b"Started HTTPService" in proc.stdout.read()  # Triton's log is relayed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("env,args,message", [
    ({}, ["tritonserver"], "TRITON_ADMIN_TOKEN is not set: expected the secret"),
    ({ADMIN_TOKEN_ENV: SECRET}, ["tritonserver", f"--http-restricted-api=model-repository:{ADMIN_HEADER}=x"],
     "--http-restricted-api is on the command line"),
    ({ADMIN_TOKEN_ENV: SECRET}, ["/nonexistent/tritonserver"], "cannot start '/nonexistent/tritonserver'"),
])
def test_bad_use_is_one_line(env, args, message):
    base = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
    proc = wrapper(args, {**base, **env})
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 2 and message in out and len(out.strip().splitlines()) == 1, out
