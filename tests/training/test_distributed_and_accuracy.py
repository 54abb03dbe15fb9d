"""Acceptance: digits from scratch reaches >= 97 % held-out accuracy in < 2 minutes on CPU, and a 2-process torchrun
(gloo) run with the same global batch reaches the same accuracy while only rank 0 writes checkpoints."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.training.conftest import REPO, run_training, subprocess_env
from training.checkpoint import CheckpointStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "digits"
    started = time.monotonic()
    run_training("--model", "digits", "--run-dir", str(run_dir), "--seed", "0", "--epochs", "10")  # the demo's command
    return run_dir, time.monotonic() - started


def test_digits_from_scratch_reaches_97_percent_in_under_two_minutes(single_process_run):
    run_dir, seconds = single_process_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    print(f"digits: test accuracy {manifest['metrics']['test_accuracy']:.4f} in {seconds:.1f} s")
    assert manifest["metrics"]["test_accuracy"] >= 0.97
    assert seconds < 120


def test_two_process_torchrun_matches_single_process_and_only_rank_0_writes(tmp_path, single_process_run):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
           "--model", "digits", "--run-dir", str(run_dir), "--seed", "0", "--epochs", "10", "--threads", "1",
           "--progress", "off"]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pids = {int(rank): int(pid) for rank, pid in re.findall(r"\[rank (\d)\] pid (\d+) on", proc.stderr)}
    assert set(pids) == {0, 1} and pids[0] != pids[1], proc.stderr[-2000:]
    assert "gloo" in proc.stderr
    store = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print)
    assert store.listing()
    for path in store.listing():
        payload = store.read(path).payload
        assert payload["writer"]["rank"] == 0 and payload["writer"]["pid"] == pids[0]
        assert payload["world_size"] == 2 and len(payload["rng"]) == 2  # both ranks' generators are saved
    ddp = json.loads((run_dir / "manifest.json").read_text())["metrics"]
    single = json.loads((single_process_run[0] / "manifest.json").read_text())["metrics"]
    print(f"test accuracy: 1 process {single['test_accuracy']:.4f}, 2 processes {ddp['test_accuracy']:.4f}")
    assert ddp["test_accuracy"] >= 0.97
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.02
    first_epoch = [json.loads((d / "metrics.jsonl").read_text().splitlines()[0]) for d in (run_dir, single_process_run[0])]
    assert first_epoch[0]["step"] == first_epoch[1]["step"] == 20  # same global batch: same optimizer steps per epoch
    exported = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest().payload["model"]
    assert all(torch.isfinite(t).all() for t in exported.values())
