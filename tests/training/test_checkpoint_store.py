"""Checkpoint files: verified before use, damaged ones reported by path and reason and set aside, retention."""
from __future__ import annotations

import io
import pathlib

import pytest
import torch

from training.checkpoint import CheckpointInvalid, CheckpointStore, checkpoint_name, decode

IDENTITY = "0123456789abcdef"


def payload(step: int, value: float = 1.0, identity: str = IDENTITY) -> dict:
    return {"format": 1, "identity": identity, "model_name": "digits", "epoch": step // 10, "position": step % 10,
            "step": step, "model": {"w": torch.full((3, 3), value), "b": torch.zeros(3)},
            "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"base_lr": 0.1}, "scaler": {},
            "rng": [{"torch": torch.get_rng_state()}], "history": [], "best": None,
            "config": {"model": "digits", "betas": [0.9, 0.999]}}


def flip_byte(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0xFF]) + blob[offset + 1:]


def make_store(tmp_path, warnings=None):
    return CheckpointStore(tmp_path / "checkpoints", IDENTITY, warn=(warnings.append if warnings is not None else print))


def save(store, step, **kw):
    p = payload(step, **kw)
    return store.save(p, checkpoint_name(p["epoch"], p["position"], p["step"]))[0]


def test_round_trip_and_newest_first(tmp_path):
    store = make_store(tmp_path)
    for step in (3, 12, 7):
        save(store, step, value=float(step))
    assert [p.name for p in store.listing()] == [checkpoint_name(1, 2, 12), checkpoint_name(0, 7, 7),
                                                 checkpoint_name(0, 3, 3)]
    loaded = store.latest()
    assert loaded.payload["step"] == 12 and torch.equal(loaded.payload["model"]["w"], torch.full((3, 3), 12.0))
    sha_line = (loaded.path.parent / (loaded.path.name + ".sha256")).read_text()
    assert sha_line == f"{loaded.sha256}  {loaded.path.name}\n"  # sha256sum -c format


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "checksum mismatch"),
    (lambda p: p.write_bytes(flip_byte(p.read_bytes(), 100)), "checksum mismatch"),
    (lambda p: (p.parent / (p.name + ".sha256")).unlink(), "no checksum file"),
])
def test_damaged_newest_falls_back_to_previous(tmp_path, damage, reason):
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    save(store, 5)
    newest = save(store, 9)
    damage(newest)
    loaded = store.latest()
    assert loaded.payload["step"] == 5
    assert len(warnings) == 1 and str(newest) in warnings[0] and reason in warnings[0]
    assert (newest.parent / (newest.name + ".bad")).exists() and not newest.exists()  # set aside, not deleted
    assert store.latest().payload["step"] == 5 and len(warnings) == 1  # reported once


def test_checkpoint_of_another_run_is_refused(tmp_path):
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    save(store, 1)
    other = CheckpointStore(store.directory, "ffffffffffffffff", warn=print)
    p = payload(2, identity="ffffffffffffffff")
    other.save(p, checkpoint_name(0, 2, 2))
    assert store.latest().payload["step"] == 1
    assert "belongs to another run" in warnings[0]


def test_no_usable_checkpoint_means_fresh_start(tmp_path):
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    path = save(store, 4)
    path.write_bytes(b"")
    assert store.latest() is None and "checksum mismatch" in warnings[0]


def test_non_finite_weights_are_never_written_nor_loaded(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(ValueError, match="non-finite weights in w"):
        save(store, 1, value=float("nan"))
    assert store.listing() == []
    buffer = io.BytesIO()
    torch.save(payload(1, value=float("inf")), buffer)
    with pytest.raises(CheckpointInvalid, match="non-finite"):
        decode(buffer.getvalue(), IDENTITY)


class RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint would do with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_loading_never_unpickles_code(tmp_path):
    marker = tmp_path / "code-ran"
    evil = payload(1)
    evil["extra"] = RunsCodeWhenUnpickled(marker)
    buffer = io.BytesIO()
    torch.save(evil, buffer)
    with pytest.raises(CheckpointInvalid, match="weights_only"):
        decode(buffer.getvalue(), IDENTITY)
    assert not marker.exists()


def test_retention_keeps_last_n_and_the_best(tmp_path):
    store = make_store(tmp_path)
    paths = [save(store, step) for step in (1, 2, 3, 4, 5, 6)]
    deleted = store.prune(keep_last=2, protect={paths[1].name})
    assert sorted(p.name for p in store.listing()) == sorted([paths[1].name, paths[4].name, paths[5].name])
    assert {p.name for p in deleted} == {paths[0].name, paths[2].name, paths[3].name}
    assert not any((p.parent / (p.name + ".sha256")).exists() for p in deleted)


def test_leftovers_of_interrupted_writes_are_cleaned(tmp_path):
    store = make_store(tmp_path)
    kept = save(store, 1)
    (store.directory / ".ckpt-e0000-b000002-s000000002.pt.abc.tmp").write_bytes(b"partial")
    (store.directory / "ckpt-e0000-b000003-s000000003.pt.sha256").write_text("0" * 64 + "  x\n")
    store.clean_leftovers()
    assert sorted(p.name for p in store.directory.iterdir()) == [kept.name, kept.name + ".sha256"]
