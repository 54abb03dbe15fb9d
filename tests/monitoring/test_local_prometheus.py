"""The local Prometheus launcher and the commands that read from Prometheus, when things are missing or down.

The issue's "bad input" promise: a missing exporter or a Prometheus that is down never crashes anything, and the
command that needs it says which target is missing. Everything here runs the real /usr/bin/prometheus.
"""
from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from common.errors import UserError
from common.net import free_port
from monitoring.local_prometheus import LocalPrometheus, LocalPrometheusConfig
from monitoring.prom_api import PrometheusAPI
from monitoring.render import render_panels
from monitoring.panels import main_panels
from monitoring.slo import load_slo
from tests.monitoring.conftest import (assert_one_line_error, prometheus_processes, read_until, run_monitoring_cli,
                                       start_monitoring_cli)

pytestmark = pytest.mark.usefixtures("no_leftover_prometheus")


def closed_port() -> int:
    """A port nobody listens on (free now; nothing in these tests binds it)."""
    return free_port()


def test_context_manager_reports_a_down_target_by_name_and_cleans_up(tmp_path):
    dead = f"127.0.0.1:{closed_port()}"
    config = LocalPrometheusConfig(targets={"gpu-exporter": [dead]}, port=free_port())
    with LocalPrometheus(config) as prom:
        pid = prom.process.pid
        workdir = prom.workdir
        targets = prom.wait_for_scrapes(15)
        down = [t for t in targets if t.job == "gpu-exporter"]
        assert down and down[0].health == "down" and down[0].instance == dead
        assert {t.job for t in targets if t.up} == {"prometheus"}
        rules = prom.api.rules()
        assert rules and all(r["health"] in ("ok", "unknown") for r in rules)
        # The panels still render: GPU panels say which target is missing, nothing raises.
        slo = load_slo()
        gpu = [p for p in main_panels(slo) if p.key.startswith("gpu_")]
        now = time.time()
        results = render_panels(prom.api, gpu, now - 60, now, tmp_path / "png")
        assert all(r.no_data_reason and f"target gpu-exporter at {dead} is down" in r.no_data_reason
                   for r in results)
        summary = json.loads((tmp_path / "png" / "panels.json").read_text())
        assert any(dead in line for line in summary["targets_down"])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not workdir.exists()


def test_port_in_use_and_bad_targets_are_clear_errors():
    port = free_port()
    with LocalPrometheus(LocalPrometheusConfig(targets={"triton": [f"127.0.0.1:{closed_port()}"]}, port=port)):
        with pytest.raises(UserError, match=f"port {port} .* already in use"):
            LocalPrometheus(LocalPrometheusConfig(targets={"triton": ["127.0.0.1:1"]}, port=port)).start()
    result = run_monitoring_cli("prometheus", "--triton", "localhost", "--port", str(free_port()))
    assert_one_line_error(result, "'localhost'", "HOST:PORT")
    assert_one_line_error(run_monitoring_cli("prometheus", "--port", str(free_port())), "no target to scrape",
                          "--triton")


def test_cli_names_the_missing_target_and_stops_cleanly_on_ctrl_c():
    dead = f"127.0.0.1:{closed_port()}"
    port = free_port()
    proc = start_monitoring_cli("prometheus", "--triton", dead, "--port", str(port), "--wait-targets", "10")
    try:
        lines = read_until(proc, "press Ctrl-C", timeout=60)
        text = "\n".join(lines)
        assert f"Prometheus ready at http://127.0.0.1:{port}" in text
        assert f"warning: target triton at {dead} is down" in text
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert children, "Prometheus is not running under the launcher"
        targets = run_monitoring_cli("targets", "--prometheus", f"http://127.0.0.1:{port}", "--expect", "clients")
        assert_one_line_error(targets, f"target triton at {dead} is down", "no target of job clients")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert not [pid for pid in children if psutil.pid_exists(pid) and
                psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_prometheus_dies_with_a_killed_launcher():
    proc = start_monitoring_cli("prometheus", "--triton", f"127.0.0.1:{closed_port()}", "--port", str(free_port()),
                                "--wait-targets", "0")
    read_until(proc, "press Ctrl-C", timeout=60)
    children = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    assert children
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"Prometheus outlived its launcher: {[p.pid for p in alive]}"
    assert not prometheus_processes() & {p.pid for p in children}


def test_commands_say_prometheus_is_down_instead_of_crashing(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    assert_one_line_error(run_monitoring_cli("panels", "--prometheus", url, "--last", "5m", "--out", str(tmp_path)),
                          f"Prometheus at {url} is not reachable")
    assert_one_line_error(run_monitoring_cli("targets", "--prometheus", url), "not reachable")
    with pytest.raises(UserError, match="not reachable"):
        PrometheusAPI(url).query("up")
    assert_one_line_error(run_monitoring_cli("panels", "--prometheus", url, "--last", "5 minutes", "--out",
                                             str(tmp_path)), "--last", "not a duration")
