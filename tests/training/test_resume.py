"""Resume after ``kill -9`` ends bit-identical to an uninterrupted run; damaged checkpoints are skipped, not fatal."""
from __future__ import annotations

import re
import signal
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import run_training, start_training, stop_process, wait_for
from training.checkpoint import CheckpointStore

pytestmark = pytest.mark.slow


def checkpoints_with_checksum(run_dir):
    folder = run_dir / "checkpoints"
    return sorted(folder.glob("*.pt.sha256")) if folder.is_dir() else []


def last_checkpoint_weights(run_dir):
    loaded = CheckpointStore(run_dir / "checkpoints", identity=None, warn=print).latest()
    return loaded.payload["model"], loaded.payload["step"]


ARGS = ["--model", "digits", "--seed", "3", "--threads", "1", "--progress", "off", "--max-train-samples", "640",
        "--epochs", "3", "--checkpoint-every-steps", "3", "--keep-last", "2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every other run must equal (3 epochs of 10 steps, a checkpoint every 3 steps)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_training(*ARGS, "--run-dir", str(run_dir))
    return run_dir


def kill_after_checkpoints(run_dir, log, count):
    proc = start_training(*ARGS, "--run-dir", str(run_dir), log=log)
    try:
        wait_for(lambda: len(checkpoints_with_checksum(run_dir)) >= count, 120, f"{count} checkpoint(s)", proc, log)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_process(proc)


def assert_same_result(run_dir, reference):
    assert (run_dir / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    ours, step = last_checkpoint_weights(run_dir)
    theirs, ref_step = last_checkpoint_weights(reference)
    assert step == ref_step == 30
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_kill_9_after_first_checkpoint_then_resume_is_bit_identical(tmp_path, reference):
    run_dir = tmp_path / "run"
    kill_after_checkpoints(run_dir, tmp_path / "killed.log", count=1)
    assert not (run_dir / "manifest.json").exists() or "test_accuracy" not in (run_dir / "manifest.json").read_text()
    resumed = run_training(*ARGS, "--run-dir", str(run_dir))
    match = re.search(r"resuming from \S+ \(epoch \d+, batch \d+, step (\d+)\)", resumed.stderr)
    assert match and 0 < int(match.group(1)) < 30, resumed.stderr
    assert_same_result(run_dir, reference)
    exported = load_file(str(run_dir / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in exported.values())


def copy_run(source, target):
    shutil.copytree(source, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


def test_damaged_checkpoints_are_reported_and_the_previous_good_one_is_used(tmp_path, reference):
    run_dir = copy_run(reference, tmp_path / "run")
    for name in ("model.safetensors", "manifest.json"):
        (run_dir / name).unlink()
    folder = run_dir / "checkpoints"
    newest = max(folder.glob("*.pt"), key=lambda p: p.name)  # the final checkpoint, step 30
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    no_checksum = folder / "ckpt-e0009-b000000-s000000999.pt"  # as if killed between the checkpoint's two renames
    shutil.copy(min(folder.glob("*.pt"), key=lambda p: p.name), no_checksum)
    (folder / ".ckpt-e0009-b000001-s000001000.pt.x1y2.tmp").write_bytes(b"as if killed during the write")
    resumed = run_training(*ARGS, "--run-dir", str(run_dir))
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning: checkpoint")]
    assert any(str(no_checksum) in w and "no checksum file" in w for w in warnings), resumed.stderr
    assert any(str(newest) in w and "checksum mismatch" in w for w in warnings), resumed.stderr
    assert (newest.parent / (newest.name + ".bad")).exists()
    assert not list(folder.glob(".ckpt-*.tmp"))
    match = re.search(r"resuming from \S+ \(epoch \d+, batch \d+, step (\d+)\)", resumed.stderr)
    assert match and int(match.group(1)) < 30
    assert_same_result(run_dir, reference)


def test_finished_run_rerun_is_a_no_op_that_keeps_the_export(tmp_path, reference):
    run_dir = copy_run(reference, tmp_path / "run")
    before = (run_dir / "model.safetensors").read_bytes()
    again = run_training(*ARGS, "--run-dir", str(run_dir))
    assert "epoch 1/" not in again.stderr and "done:" in again.stderr
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_export_is_what_the_builders_load(reference):
    from training.export import load_exported

    exported = load_exported(reference)
    manifest = exported.manifest
    assert manifest.model == "digits" and manifest.parent_checkpoint is not None
    assert (reference / manifest.parent_checkpoint.path).is_file()  # the best checkpoint is retained
    assert {"val_accuracy", "test_accuracy", "test_loss"} <= set(manifest.metrics)
    assert manifest.training["seed"] == 3 and manifest.training["run_identity"]
    assert (reference / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (reference / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
