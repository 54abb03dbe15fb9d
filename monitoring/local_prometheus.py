"""Run the real Prometheus (the Debian package's ``/usr/bin/prometheus``) on this machine for the demo and the tests.

``python -m monitoring prometheus --triton 127.0.0.1:8002 [--client-metrics 127.0.0.1:9646] --port 9090`` writes a
configuration for the given targets plus the recording and alert rules generated from ``slo.toml`` into a temporary
directory, starts Prometheus bound to 127.0.0.1 with a temporary storage directory, waits until it is ready, reports
every target it cannot scrape by name, and runs until Ctrl-C. From Python::

    with LocalPrometheus(LocalPrometheusConfig(targets={"triton": ["127.0.0.1:8002"]}, port=free_port())) as prom:
        prom.api.query("model:inference_requests:rate")

It never leaves anything behind: Ctrl-C, SIGTERM, an exception or the end of the ``with`` block stop Prometheus
(SIGTERM, then SIGKILL) and delete the temporary files; Prometheus also gets a parent-death signal, so killing the
launcher with ``kill -9`` stops it too. A target that is down is reported, never fatal: Prometheus keeps scraping it
and its panels say "no data".
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common import cli
from common.errors import UserError
from common.files import atomic_write_text
from common.foreground import foreground
from common.net import port_in_use
from common.processes import death_signal_for_this_thread
from common.processes import stop as stop_process
from monitoring.generate import rule_files_text
from monitoring.prom_api import PrometheusAPI, TargetHealth, describe_down
from monitoring.scrape_config import local_config
from monitoring.slo import DEFAULT_SLO_FILE, duration_seconds, load_slo
from monitoring.targets import JOBS
from monitoring.yamlfmt import dump

_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class LocalPrometheusConfig(BaseModel):
    """How a local Prometheus is started (loadable from TOML/YAML via ``common.config``)."""

    model_config = ConfigDict(extra="forbid")

    targets: dict[str, list[str]] = Field(default_factory=dict, description="job name -> host:port targets")
    host: str = Field("127.0.0.1", description="address the web UI and API bind to")
    port: int = Field(9090, ge=1, le=65535)
    scrape_interval: str = "1s"
    evaluation_interval: str = "1s"
    slo_file: Path = DEFAULT_SLO_FILE
    rate_window: str | None = Field(None, description="window of the recording rules' rates; default: the SLO "
                                    "file's. A run shorter than a few windows needs a shorter one, or every rate "
                                    "averages in the idle time before and after the load")
    storage_dir: Path | None = Field(None, description="TSDB directory (default: a temporary one, deleted on stop)")
    retention: str = "1d"
    ready_timeout_s: float = Field(30.0, gt=0)
    binary: str = Field("prometheus", description="the Prometheus executable (PATH lookup or a path)")

    @field_validator("scrape_interval", "evaluation_interval", "retention", "rate_window")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value

    @field_validator("targets")
    @classmethod
    def _addresses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for job, addresses in value.items():
            for address in addresses:
                if not _ADDRESS.match(address):
                    raise ValueError(f"target {address!r} of job {job} is not HOST:PORT (e.g. 127.0.0.1:8002)")
        return value


class LocalPrometheus:
    """One Prometheus process with its own configuration directory; a context manager that always cleans up."""

    def __init__(self, config: LocalPrometheusConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def api(self) -> PrometheusAPI:
        return PrometheusAPI(self.url)

    @property
    def log_file(self) -> Path | None:
        return self.workdir / "prometheus.log" if self.workdir else None

    def _binary(self) -> str:
        found = shutil.which(self.config.binary)
        if not found:
            raise UserError(f"Prometheus executable {self.config.binary!r} not found; install it "
                            "(Debian/Ubuntu: apt-get install prometheus) or pass --binary PATH")
        return found

    def write_files(self, workdir: Path) -> Path:
        """The configuration and rule files Prometheus will load; returns the configuration path."""
        cfg = self.config
        slo = load_slo(cfg.slo_file)
        if cfg.rate_window:
            slo = slo.model_copy(update={"rate_window": cfg.rate_window})
        try:
            slo.check_window_against(cfg.scrape_interval)
        except ValueError as exc:
            raise UserError(f"{cfg.slo_file}: {exc}") from None
        for rel, text in rule_files_text(slo).items():
            atomic_write_text(workdir / "rules" / Path(rel).name, text)
        config_path = workdir / "prometheus.yml"
        atomic_write_text(config_path, dump(local_config(cfg.targets, cfg.scrape_interval, cfg.evaluation_interval,
                                                         f"{cfg.host}:{cfg.port}"),
                                            header="Local Prometheus written by `python -m monitoring prometheus`."))
        return config_path

    def start(self) -> "LocalPrometheus":
        cfg = self.config
        binary = self._binary()
        if port_in_use(cfg.port, cfg.host):
            raise UserError(f"port {cfg.port} on {cfg.host} is already in use; stop what holds it "
                            f"(`ss -ltnp 'sport = :{cfg.port}'`) or choose another with --port")
        self.workdir = Path(tempfile.mkdtemp(prefix="local-prometheus-"))
        try:
            config_path = self.write_files(self.workdir)
            storage = cfg.storage_dir or self.workdir / "data"
            command = [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--storage.tsdb.retention.time={cfg.retention}",
                f"--web.listen-address={cfg.host}:{cfg.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ]
            self._log = open(self.log_file, "wb")
            self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=death_signal_for_this_thread())
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        api = self.api
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"Prometheus exited with status {self.process.returncode} before it was ready: "
                                f"{self._last_log_line()}")
            if api.ready():
                return
            time.sleep(0.2)
        raise UserError(f"Prometheus was not ready within {self.config.ready_timeout_s:.0f} s: {self._last_log_line()}")

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, AttributeError):
            return "no log"
        errors = [ln for ln in lines if "level=error" in ln]
        return (errors or lines or ["empty log"])[-1]

    def target_health(self) -> list[TargetHealth]:
        return self.api.targets()

    def wait_for_scrapes(self, timeout_s: float) -> list[TargetHealth]:
        """Wait until every target was scraped once (or ``timeout_s`` passes); return the final health."""
        expected = sum(len(addresses) for addresses in self.config.targets.values()) + 1   # + Prometheus itself
        deadline = time.monotonic() + timeout_s
        targets = self.target_health()
        while time.monotonic() < deadline and (len(targets) < expected or any(t.health == "unknown" for t in targets)):
            time.sleep(0.25)
            targets = self.target_health()
        return targets

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; delete the temporary directory. Idempotent."""
        proc, self.process = self.process, None
        stop_process(proc, grace_s, group=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for job in JOBS:
        if job.cli_flag:
            parser.add_argument(job.cli_flag, action="append", default=[], metavar="HOST:PORT", dest=f"job_{job.name}",
                                help=f"scrape {job.what} at HOST:PORT as job '{job.name}' (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address Prometheus binds to (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="Prometheus web/API port (default 9090)")
    parser.add_argument("--scrape-interval", default="1s", help="how often every target is scraped (default 1s)")
    parser.add_argument("--evaluation-interval", default="1s", help="how often rules are evaluated (default 1s)")
    parser.add_argument("--slo", default=str(DEFAULT_SLO_FILE), help="SLO file the rules are generated from "
                        "(default monitoring/slo.toml)")
    parser.add_argument("--storage", help="keep the TSDB in this directory (default: a temporary one, deleted on exit)")
    parser.add_argument("--retention", default="1d", help="how long samples are kept (default 1d)")
    parser.add_argument("--binary", default="prometheus", help="Prometheus executable (default: prometheus on PATH)")
    parser.add_argument("--wait-targets", type=float, default=15.0, metavar="SECONDS",
                        help="after start, wait up to this long for the first scrape of every target and report the "
                             "ones that are down (default 15)")


def config_from_args(args: argparse.Namespace) -> LocalPrometheusConfig:
    from common.config import validate

    targets = {job.name: getattr(args, f"job_{job.name}") for job in JOBS if job.cli_flag}
    targets = {job: addresses for job, addresses in targets.items() if addresses}
    if not targets:
        raise UserError("no target to scrape; pass at least one of " + ", ".join(
            f"{j.cli_flag} HOST:PORT" for j in JOBS if j.cli_flag))
    return validate(LocalPrometheusConfig, {
        "targets": targets, "host": args.host, "port": args.port, "scrape_interval": args.scrape_interval,
        "evaluation_interval": args.evaluation_interval, "slo_file": args.slo, "storage_dir": args.storage,
        "retention": args.retention, "binary": args.binary,
    }, "command line")


def report_targets(targets: list[TargetHealth]) -> list[str]:
    """Print one line per target; return the problems."""
    for t in targets:
        print(f"  {t.job:<14} {t.instance:<24} {t.health}", flush=True)
    return describe_down(targets)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m monitoring prometheus", __doc__, add_arguments, argv, args)
    config = config_from_args(args)
    prometheus = LocalPrometheus(config)

    def start() -> None:
        prometheus.start()
        print(f"Prometheus ready at {prometheus.url} (rules from {config.slo_file})", flush=True)
        for problem in report_targets(prometheus.wait_for_scrapes(args.wait_targets)):
            print(f"warning: {problem}", flush=True)

    return foreground("Prometheus", start, prometheus.running, prometheus.stop, prometheus._last_log_line)
