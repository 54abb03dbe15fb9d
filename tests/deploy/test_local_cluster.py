"""The local multi-replica run (``python -m deploy local-cluster``) as part of the suite: moto S3, real Triton
replicas reading ``s3://``, a real nginx balancing HTTP and gRPC, bounded load through it, a live rollout, an overload
that the real Prometheus sees in the autoscaling rule, and a ``kill -9``. About a minute on two cores.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


def test_without_nginx_the_command_says_so_before_starting_anything(monkeypatch, tmp_path):
    from common.errors import UserError
    from deploy import local_cluster

    monkeypatch.setenv("PATH", str(tmp_path))                      # no nginx on this PATH ...
    monkeypatch.setattr(local_cluster, "NGINX_FALLBACKS", ())      # ... nor in /usr/sbin
    with pytest.raises(UserError, match=r"^nginx is not installed; .* \(Debian/Ubuntu: apt-get install nginx-light\)$"):
        local_cluster.main(["--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()                         # nothing was started or written


@pytest.mark.slow
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)")
def test_rollout_under_load_has_zero_failures_and_a_kill_costs_at_most_the_in_flight_requests(tmp_path):
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "deploy", "local-cluster", "--run-dir", str(tmp_path / "run"),
                           "--json", str(summary_file)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(summary_file.read_text())
    rollout = summary["rollout"]
    assert rollout["failed"] == 0
    assert set(rollout["answered_by_version"]) == {"1", "2"}          # the switch happened under load
    assert summary["old_version_after_rollout"] == 0
    assert summary["after_kill"]["sent"] > 0 and summary["after_kill"]["failed"] <= summary["clients"]
    histories = summary["replica_versions"]
    assert histories["a"][-1][1] == "down"                            # the killed one
    assert histories["b"][-1][1] == "v2"
    late = summary["late_replica"]["name"]
    assert [state for _, state in histories[late] if state != "down"][0] == "v2"
    for line in ("rollout: sent", "after_kill: sent", "per-replica serving version over time", "replica a: v1"):
        assert line in proc.stdout
    assert summary["locust"]["requests"] > 0               # Locust (benchmarks loadtest) overloaded through nginx
    scaling = summary["autoscaling"]
    if shutil.which("prometheus") is None:
        assert scaling is None and "prometheus is not installed" in proc.stdout
        return
    # the recording rule, evaluated by the real Prometheus: queue time rises under overload and falls after, and the
    # HPA formula on it recommends more replicas under overload than before (the command checked the same; this
    # re-checks its numbers)
    queue = scaling["queue_ms_by_phase"]
    assert queue["overload"] > max(queue["warmup"], queue["calm"])
    assert scaling["max_recommended"]["overload"] > scaling["max_recommended"]["warmup"]
    from deploy.autoscaling import Bounds, recommend
    bounds = Bounds(scaling["min_replicas"], scaling["max_replicas"])
    for row in scaling["timeline"]:       # every printed recommendation follows the formula from its own inputs
        mean_s = row["queue_ms_per_pod_mean"] / 1000
        assert row["recommended"] == recommend(row["pods"], [mean_s] * row["pods"], scaling["target_ms"] / 1000,
                                               bounds)
