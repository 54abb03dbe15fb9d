"""Start the real Triton Inference Server against a model repository and keep it tidy.

``python -m clients serve --repository model_repository`` (see ``--help``) or, from Python::

    with TritonServer(ServerConfig(repository="model_repository")) as server:
        print(server.http_url)

What it guarantees:

* pre-flight checks before anything starts: the repository exists and holds models, every model's configuration parses
  with Triton's own ``model_config.proto`` (errors name the model, the file and the field), the ports are free;
* readiness: it waits for ``/v2/health/ready`` with a timeout, and when Triton fails to load a model it reports Triton's
  own one-line reason from the server log instead of a timeout;
* safe defaults: every endpoint binds to 127.0.0.1; binding anything else (``--host`` or an address flag in
  ``extra_args``) requires an admin token in the environment (``TRITON_ADMIN_TOKEN``). The model-control,
  shared-memory, trace and logging APIs are always restricted: without ``TRITON_ADMIN_TOKEN`` each start makes its own
  token and hands it to local clients and the builders through a file only this user can read, and the token is
  overwritten in the server's argument memory once Triton has read it (see :mod:`clients.admin_token`);
* no leftovers: SIGINT/SIGTERM and normal exit stop the server (SIGTERM, then SIGKILL after a grace period), and the
  server is started with a parent-death signal, so even ``kill -9`` of the launcher does not leave a ``tritonserver``.
"""
from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import time
import weakref
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common import cli
from common.errors import UserError, run_cli
from common.foreground import foreground
from common.net import http_ok, port_in_use
from common.processes import death_signal_for_this_thread
from common.processes import stop as stop_process
from common.triton_config import config_path, load_config_file
from common.triton_install import TritonNotInstalled, ensure_python_backend_stub, locate, server_environment
from builders.tensorrt_meta import version_compatible_plans
from clients import admin_token
from clients.repository_check import prepare_repository

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ADMIN_TOKEN_ENV, ADMIN_HEADER, RESTRICTED_APIS = (admin_token.ADMIN_TOKEN_ENV, admin_token.ADMIN_HEADER,
                                                   admin_token.RESTRICTED_APIS)
# tritonserver flags that decide where it listens: an address flag, or an endpoint that always binds every interface
ADDRESS_FLAGS = ("--http-address", "--grpc-address", "--metrics-address")
ALL_INTERFACE_FLAGS = ("--allow-sagemaker", "--allow-vertex-ai")


def flag_values(args: Sequence[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in ``args``, in both spellings ``--flag=value`` and ``--flag value``."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
    return values


class ServerConfig(BaseModel):
    """Everything that decides how Triton is started (loadable from TOML/YAML via ``common.config``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    repository: Path | str = Field(Path("model_repository"), description="model repository directory, or "
                                   "s3://[host:port/]bucket/prefix (Triton reads object storage itself)")
    host: str = Field("127.0.0.1", description="address every endpoint binds to")

    @field_validator("repository", mode="before")
    @classmethod
    def _s3_url_or_path(cls, value):
        """An ``s3://`` URL stays a string (Path would fold its ``//``); anything else is a directory."""
        return value if str(value).startswith("s3://") else Path(value)
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    config_name: str | None = Field(None, description="--model-config-name: picks configs/NAME.pbtxt per model")
    model_control: Literal["none", "poll", "explicit"] = "none"
    load_models: list[str] = Field(default_factory=list, description="explicit mode: models to load at start (all when empty)")
    log_file: Path = Path(".cache/triton/server.log")
    log_verbose: int = Field(0, ge=0)
    ready_timeout_s: float = Field(120.0, gt=0)
    exit_timeout_s: int = Field(5, ge=0, description="grace for in-flight requests on shutdown")
    metrics_interval_ms: int = Field(1000, gt=0)
    http_thread_count: int | None = Field(None, gt=0)
    extra_args: list[str] = Field(default_factory=list, description="passed to tritonserver verbatim")
    admin_token_dir: Path | None = Field(
        None, description="where a generated admin token is written (default $TRITON_ADMIN_TOKEN_DIR or "
                          "~/.cache/inference-platform/triton-admin)")

    def bind_addresses(self) -> list[str]:
        """Every address Triton will listen on: ``host``, every address flag in ``extra_args`` (Triton takes the last
        of repeated flags, but all of them are counted), and 0.0.0.0 for endpoints that cannot be bound elsewhere."""
        addresses = [self.host]
        for flag in ADDRESS_FLAGS:
            addresses += flag_values(self.extra_args, flag)
        for flag in ALL_INTERFACE_FLAGS:
            if any(v.lower() in ("true", "1", "on", "yes") for v in flag_values(self.extra_args, flag)):
                addresses.append("0.0.0.0")
        return addresses

    @property
    def exposed(self) -> bool:
        return any(address not in LOOPBACK for address in self.bind_addresses())

    @property
    def exposed_address(self) -> str:
        return next((a for a in self.bind_addresses() if a not in LOOPBACK), self.host)


_LIVE_SERVERS: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()


@atexit.register
def _stop_leftover_servers() -> None:
    """Interpreter exit (also after an unhandled exception) stops every server this process started."""
    for server in list(_LIVE_SERVERS):
        server.stop(grace_s=5)


from clients.triton_log import first_error  # noqa: E402  (one line, without the CPU-only warnings)


class TritonServer:
    """One tritonserver process; a context manager that always stops it."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.models: list[str] = []  # names found by the pre-flight check of the last start()
        self._log_handle = None
        self.admin_token: str | None = None  # the token of the running server (from the environment or generated)
        self.token_files: list[Path] = []  # where a generated token was written for local clients
        self.cmdline_exposure: str | None = None  # why the token could not be hidden from the process list, if so
        self._scrubbed = False

    # -- addresses ---------------------------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.config.metrics_port}/metrics"

    # -- checks --------------------------------------------------------------------------------------------------------
    def model_dirs(self) -> list[Path]:
        repo = self.config.repository
        return sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")) if repo.is_dir() else []

    def preflight(self) -> list[str]:
        """Check everything that can be checked before starting; raise UserError on the first problem."""
        cfg = self.config
        if isinstance(cfg.repository, str):  # s3://: reachable, bucket present, every model has its configuration
            from builders.object_store import ObjectRepository

            return self._check_ports_and_exposure(ObjectRepository(cfg.repository).check_readable(cfg.config_name))
        if not cfg.repository.is_dir():
            raise UserError(f"model repository {cfg.repository} does not exist (expected a directory of model folders; "
                            "build one with `python -m builders build`)")
        prepare_repository(cfg.repository, every_folder=not (cfg.model_control == "explicit" and cfg.load_models))
        models = self.model_dirs()
        if not models:
            raise UserError(f"model repository {cfg.repository} holds no model folders (expected <model>/config.pbtxt "
                            "and <model>/<version>/; build one with `python -m builders build`)")
        names = []
        for model_dir in models:
            path = config_path(model_dir, cfg.config_name)
            if not path.is_file():
                raise UserError(f"model '{model_dir.name}': {path} is missing (expected a Triton model configuration)")
            try:
                config = load_config_file(path)  # file:line:col and the field
            except UserError as exc:
                raise UserError(f"model '{model_dir.name}': {exc}") from None
            if config.name and config.name != model_dir.name:
                raise UserError(f"model '{model_dir.name}': {path}: field 'name' is {config.name!r} but must equal the "
                                f"folder name {model_dir.name!r}")
            names.append(model_dir.name)
        return self._check_ports_and_exposure(names)

    def _check_ports_and_exposure(self, names: list[str]) -> list[str]:
        cfg = self.config
        ports = {"http_port": cfg.http_port, "grpc_port": cfg.grpc_port, "metrics_port": cfg.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise UserError(f"the HTTP, gRPC and metrics ports must differ (got {ports})")
        for field, port in ports.items():
            if port_in_use(port, "0.0.0.0" if cfg.exposed else cfg.host):
                raise UserError(f"port {port} ({field}) on {cfg.host} is already in use; stop what holds it "
                                f"(`ss -ltnp 'sport = :{port}'`) or choose another with --{field.replace('_', '-')}")
        if cfg.exposed and not os.environ.get(ADMIN_TOKEN_ENV):
            raise UserError(f"binding Triton to {cfg.exposed_address} exposes it beyond this machine: set {ADMIN_TOKEN_ENV} to a "
                            f"secret so the admin APIs ({', '.join(RESTRICTED_APIS)}) are restricted, or use --host 127.0.0.1")
        return names

    def command(self, token: str | None = None) -> list[str]:
        """The tritonserver command line; ``token`` (default: ``$TRITON_ADMIN_TOKEN``) restricts the admin APIs."""
        cfg = self.config
        install = locate()
        args = [
            str(install.binary),
            f"--model-repository={cfg.repository if isinstance(cfg.repository, str) else cfg.repository.resolve()}",
            f"--backend-directory={install.backend_dir}",
            f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
            f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={cfg.host}", f"--metrics-port={cfg.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=true", "--allow-cpu-metrics=true",
            f"--metrics-interval-ms={cfg.metrics_interval_ms}",
            "--metrics-config=summary_latencies=true",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
            f"--model-control-mode={cfg.model_control}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--log-verbose={cfg.log_verbose}",
        ]
        if cfg.http_thread_count:
            args.append(f"--http-thread-count={cfg.http_thread_count}")
        if cfg.config_name:
            args.append(f"--model-config-name={cfg.config_name}")
        if cfg.model_control == "explicit":
            args += [f"--load-model={m}" for m in cfg.load_models] or ["--load-model=*"]
        if isinstance(cfg.repository, Path) and version_compatible_plans(cfg.repository):  # Triton's TensorRT runtime must accept their lean-runtime code
            args.append("--backend-config=tensorrt,version-compatible=true")
        token = token or os.environ.get(ADMIN_TOKEN_ENV)
        if token:
            args += admin_token.restriction_flags(token)
        return args + list(cfg.extra_args)

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def start(self) -> "TritonServer":
        self.models = self.preflight()
        given = os.environ.get(ADMIN_TOKEN_ENV)
        self.admin_token = given or admin_token.new_token()
        self._scrubbed, self.cmdline_exposure = False, None
        try:
            ensure_python_backend_stub()
            command = self.command(self.admin_token)
        except TritonNotInstalled as exc:
            raise UserError(str(exc)) from None
        if not given:
            self.token_files = admin_token.write_token(
                self.admin_token, (self.config.http_port, self.config.grpc_port), self.config.admin_token_dir)
        log_file = self.config.log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(log_file, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=server_environment(), start_new_session=True, preexec_fn=death_signal_for_this_thread(),
        )
        _LIVE_SERVERS.add(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        ready_url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            self._hide_token()
            if self.process.poll() is not None:
                reason = first_error(self.log_text()) or f"tritonserver exited with status {self.process.returncode}"
                self.stop()
                raise UserError(f"{reason} (server log: {self.config.log_file})")
            if http_ok(ready_url, timeout=1.0):
                self._hide_token(parsed=True)
                return
            time.sleep(0.2 if self._scrubbed else 0.01)  # the token is in the process list until it is overwritten
        reason = first_error(self.log_text())
        self.stop()
        raise UserError(f"Triton was not ready within {self.config.ready_timeout_s:.0f} s"
                        + (f": {reason}" if reason else "") + f" (server log: {self.config.log_file})")

    def _hide_token(self, parsed: bool = False) -> None:
        """Overwrite the token in tritonserver's argument memory once it has parsed its options (it has when its log
        has a first line, or when it answers)."""
        if self._scrubbed or not self.running():
            return
        if not parsed:
            try:
                parsed = self.config.log_file.stat().st_size > 0
            except OSError:
                parsed = False
        if parsed:
            self._scrubbed = True
            self.cmdline_exposure = admin_token.scrub_from_cmdline(self.process.pid, self.admin_token)

    def log_text(self) -> str:
        try:
            return self.config.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, wait for Triton's own exit timeout plus a margin, then SIGKILL. Idempotent."""
        if self.process is None:
            return None
        code = stop_process(self.process, self.config.exit_timeout_s + 10 if grace_s is None else grace_s, group=True)
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        if self.token_files:
            admin_token.remove_token_files(self.token_files, self.admin_token or "")
            self.token_files = []
        _LIVE_SERVERS.discard(self)
        return code

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_version(http_url: str, timeout: float = 2.0) -> str:
    """The version Triton reports at ``/v2`` (proves the real server answers)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{http_url}/v2", timeout=timeout) as resp:
        meta = json.loads(resp.read())
    return f"{meta.get('name', '?')} {meta.get('version', '?')}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", "--model-repository", dest="repository",
                        help="model repository directory (default: the config file's, else model_repository)")
    parser.add_argument("--config", help="TOML/YAML file with ServerConfig fields; flags override it")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; anything else needs $%s)" % ADMIN_TOKEN_ENV)
    parser.add_argument("--http-port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8001)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default 8002)")
    parser.add_argument("--config-name", help="pick configs/NAME.pbtxt in every model folder (e.g. cpu, onnxruntime, tensorrt)")
    parser.add_argument("--model-control", choices=["none", "poll", "explicit"], help="Triton model-control mode (default none)")
    parser.add_argument("--load-model", action="append", dest="load_models", help="explicit mode: model to load (repeatable)")
    parser.add_argument("--log-file", help="server log file (default .cache/triton/server.log)")
    parser.add_argument("--ready-timeout", type=float, dest="ready_timeout_s", help="seconds to wait for readiness (default 120)")
    parser.add_argument("--exit-timeout", type=int, dest="exit_timeout_s", help="seconds Triton waits for in-flight requests on shutdown (default 5)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from common.config import load_config

    overrides = {k: getattr(args, k, None) for k in ("host", "http_port", "grpc_port", "metrics_port", "config_name",
                                                     "model_control", "load_models", "log_file", "ready_timeout_s",
                                                     "exit_timeout_s")}
    overrides["repository"] = args.repository
    return load_config(ServerConfig, args.config, overrides)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m clients serve", __doc__, add_arguments, argv, args)
    config = config_from_args(args)
    server = TritonServer(config)

    def start() -> None:
        print(f"starting Triton on {config.host} with the repository {config.repository}", flush=True)
        server.start()
        print(f"ready: {server_version(server.http_url)}, {len(server.models)} model(s): {', '.join(server.models)}",
              flush=True)
        print(f"  HTTP     http://{server.http_url}", flush=True)
        print(f"  gRPC     {server.grpc_url}", flush=True)
        print(f"  metrics  {server.metrics_url}", flush=True)
        print(f"  log      {config.log_file}", flush=True)
        if server.token_files:
            print(f"  admin    token for this start in {server.token_files[0].parent} (mode 0600; read by local "
                  "clients and `python -m builders`)", flush=True)
        if server.cmdline_exposure:
            print(f"warning: the admin token stays visible in the process list ({server.cmdline_exposure})", flush=True)

    def exit_reason() -> str:
        return (f"status {server.process.returncode}: "
                f"{first_error(server.log_text()) or 'see ' + str(config.log_file)}")

    return foreground("tritonserver", start, server.running, server.stop, exit_reason)


if __name__ == "__main__":
    run_cli(main)
