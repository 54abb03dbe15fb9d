"""The SLO file, the generated rules and dashboards, and promtool's verdict on them.

These are the CI gates of the issue: committed generated files must equal a fresh generation, promtool must accept the
configuration and rules, and ``promtool test rules`` must pass with a firing and a silent case for every alert.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from common.errors import UserError
from monitoring.alert_rules import all_alerts
from monitoring.dashboards import DATASOURCE_UID, panel_queries
from monitoring.generate import ALERT_RULES, MONITORING_DIR, RECORDING_RULES, RULE_TESTS, generated_files, write_files
from monitoring.panels import dashboards
from monitoring.promtool import check_all, run_promtool
from monitoring.rule_tests import alert_coverage
from monitoring.slo import DEFAULT_SLO_FILE, SLOConfig, load_slo
from tests.monitoring.conftest import assert_one_line_error, run_monitoring_cli

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool missing: apt-get install prometheus (CI installs it)")


def write_slo(path: Path, text: str) -> Path:
    path.write_text(DEFAULT_SLO_FILE.read_text() + "\n" + text)
    return path


# -- the SLO file ----------------------------------------------------------------------------------------------------
def test_committed_slo_file_loads_with_the_platform_models():
    slo = load_slo()
    assert slo.models["digits"].p99_latency_seconds > 0
    assert set(slo.ready_models) >= {"digits", "textclf"}
    assert 0 < slo.errors.max_ratio < 1 and 0 < slo.gpu.max_memory_ratio <= 1


@pytest.mark.parametrize("override, field", [
    ("[gpu]\nmax_memory_ratio = 1.5\n", "gpu.max_memory_ratio"),
    ('[latency]\nfor = "five minutes"\n', "latency.for"),
    ("[models.digits]\np99_latency_seconds = -1\n", "models.digits.p99_latency_seconds"),
    ('[models."bad name!"]\np99_latency_seconds = 1\n', "models"),
    ('[targets]\npaging_jobs = ["trition"]\n', "targets.paging_jobs"),  # a typo would stop Triton-down paging
])
def test_bad_slo_values_name_the_field(tmp_path, override, field):
    text = DEFAULT_SLO_FILE.read_text()
    section = override.split("\n", 1)[0]
    if section in text:  # replace the section instead of declaring it twice (invalid TOML)
        start = text.index(section)
        end = text.find("\n[", start + 1)
        text = text[:start] + override + (text[end:] if end != -1 else "")
    else:
        text += "\n" + override
    path = tmp_path / "slo.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_slo(path)
    assert field in str(err.value) and str(path) in str(err.value)


def test_rate_window_must_cover_four_scrapes():
    with pytest.raises(ValueError, match="4 scrape intervals"):
        SLOConfig.model_validate({"rate_window": "10s", "compose": {"scrape_interval": "5s"}})


def test_cli_reports_a_bad_slo_file_in_one_line(tmp_path):
    result = run_monitoring_cli("generate", "--slo", str(tmp_path / "missing.toml"), "--out", str(tmp_path))
    assert_one_line_error(result, "missing.toml", "does not exist")


# -- generated files -------------------------------------------------------------------------------------------------
def test_committed_generated_files_are_current():
    """The CI gate: editing slo.toml or a generator without `python -m monitoring generate` fails here."""
    result = run_monitoring_cli("generate", "--check")
    assert result.returncode == 0, result.stderr


def test_generate_check_names_a_stale_file_and_generate_repairs_it(tmp_path):
    shutil.copytree(MONITORING_DIR / "prometheus", tmp_path / "prometheus")
    shutil.copytree(MONITORING_DIR / "grafana", tmp_path / "grafana")
    alerts = tmp_path / ALERT_RULES
    alerts.write_text(alerts.read_text().replace("> 0.01", "> 0.5"))
    assert_one_line_error(run_monitoring_cli("generate", "--check", "--out", str(tmp_path)), ALERT_RULES, "stale")
    fixed = run_monitoring_cli("generate", "--out", str(tmp_path))
    assert fixed.returncode == 0 and "1 of" in fixed.stdout, fixed.stdout + fixed.stderr
    assert run_monitoring_cli("generate", "--check", "--out", str(tmp_path)).returncode == 0


def test_thresholds_flow_from_the_slo_file_into_rules_tests_and_dashboards(tmp_path):
    slo = load_slo(write_slo(tmp_path / "slo.toml", "[models.newmodel]\np99_latency_seconds = 0.025\n"
                                                   "must_be_ready = false\n").as_posix())
    files = generated_files(slo.model_copy(update={"errors": slo.errors.model_copy(update={"max_ratio": 0.05})}))
    alerts = yaml.safe_load(files[ALERT_RULES])
    exprs = {r["alert"]: r["expr"] for g in alerts["groups"] for r in g["rules"]}
    assert "> 0.05" in exprs["InferenceErrorRatioHigh"]
    recording = files[RECORDING_RULES]
    assert "vector(0.025)" in recording and "newmodel" in recording
    board = json.loads(files["grafana/dashboards/inference-slo.json"])
    error_panel = next(p for p in board["panels"] if p.get("title") == "Error ratio")
    steps = error_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 0.05
    assert "newmodel" not in [r["labels"].get("model") for g in alerts["groups"] for r in g["rules"]
                              if r["alert"] == "ModelNotReady"]


def test_every_alert_has_a_firing_and_a_silent_promtool_case():
    document = yaml.safe_load((MONITORING_DIR / RULE_TESTS).read_text())
    coverage = alert_coverage(document)
    for alert in {a.alert for a in all_alerts(load_slo())}:
        assert coverage.get(alert, {}).get("firing", 0) >= 1, f"{alert} has no firing promtool case"
        assert coverage.get(alert, {}).get("silent", 0) >= 1, f"{alert} has no silent promtool case"


def test_dashboards_use_the_provisioned_datasource_and_draw_the_slo_line():
    provisioning = yaml.safe_load((MONITORING_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert provisioning["datasources"][0]["uid"] == DATASOURCE_UID
    assert provisioning["datasources"][0]["url"] == "http://prometheus:9090"
    for spec in dashboards(load_slo()):
        board = json.loads((MONITORING_DIR / f"grafana/dashboards/{spec.uid}.json").read_text())
        titles = {p["title"] for p in board["panels"]}
        assert {p.title for p in spec.panels} <= titles
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == DATASOURCE_UID
                assert panel["fieldConfig"]["defaults"]["noValue"].startswith("no data")
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
    board = json.loads((MONITORING_DIR / "grafana/dashboards/inference-slo.json").read_text())
    latency = next(p for p in board["panels"] if p.get("title") == "Latency p50 / p95 / p99 vs SLO")
    assert latency["repeat"] == "model"
    assert any("model:slo_request_latency_p99_seconds" in t["expr"] for t in latency["targets"])
    queries = " ".join(expr for _title, expr in panel_queries(board))
    for needed in ("model:inference_requests:rate", "model:inference_errors:ratio", "model:inference_queue_seconds",
                   "model:inference_batch_size:mean", "gpu:utilization:ratio", "gpu:memory_used:ratio",
                   "gpu:power_usage:watts", "nv_cpu_utilization"):
        assert needed in queries


# -- promtool --------------------------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_accepts_config_and_rules_and_the_unit_tests_pass():
    results = check_all(MONITORING_DIR)
    assert [name for name, _ in results] == ["check config", "check rules", "test rules"]
    for name, result in results:
        assert result.ok, f"promtool {name}:\n{result.output}"
    assert "SUCCESS" in results[-1][1].output


@needs_promtool
def test_promtool_tests_catch_a_rule_that_drifts_from_the_slo(tmp_path):
    """The unit tests can fail: rules generated with a laxer error SLO than the tests expect are rejected."""
    slo = load_slo()
    drifted = generated_files(slo.model_copy(update={"errors": slo.errors.model_copy(update={"max_ratio": 0.5})}))
    files = generated_files(slo)
    files[ALERT_RULES] = drifted[ALERT_RULES]
    write_files(tmp_path, files)
    result = run_promtool(["test", "rules", str(tmp_path / RULE_TESTS)])
    assert not result.ok
    assert "InferenceErrorRatioHigh" in result.output


@needs_promtool
@pytest.mark.parametrize("max_ratio", [0.4, 0.9])
def test_a_lax_error_slo_still_generates_rule_tests_promtool_passes(tmp_path, max_ratio):
    """3x the allowed ratio is above 100 % here: the generated failing series must stay whole, valid counters."""
    slo = load_slo()
    write_files(tmp_path, generated_files(slo.model_copy(
        update={"errors": slo.errors.model_copy(update={"max_ratio": max_ratio})})))
    result = run_promtool(["test", "rules", str(tmp_path / RULE_TESTS)])
    assert result.ok, result.output


@needs_promtool
def test_check_command_runs_every_promtool_step():
    result = run_monitoring_cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("check config: ok", "check rules: ok", "test rules: ok"):
        assert step in result.stdout
