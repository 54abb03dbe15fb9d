"""A run directory belongs to one run: other models or settings are refused, foreign directories are not touched."""
from __future__ import annotations

import pytest

from common.errors import UserError
from training.config import resolve
from training.rundir import RunDir


def config(**overrides):
    return resolve(None, {"model": "digits", **overrides})


def test_same_run_resumes_and_operational_changes_are_allowed(tmp_path):
    first = RunDir(tmp_path / "run")
    assert first.claim(config()) is False
    first.release()
    again = RunDir(tmp_path / "run")
    assert again.claim(config(epochs=20, **{"metrics.port": 9402})) is True
    again.release()


def test_other_model_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    run.claim(config())
    run.release()
    with pytest.raises(UserError, match=r"belongs to model 'digits', not 'textclf'"):
        RunDir(tmp_path / "run").claim(resolve(None, {"model": "textclf"}))


def test_other_settings_are_refused_with_the_differences(tmp_path):
    run = RunDir(tmp_path / "run")
    run.claim(config())
    run.release()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(UserError) as err:
        RunDir(tmp_path / "run").claim(config(seed=5, **{"optimizer.lr": 0.01}))
    assert "optimizer.lr: 0.003 -> 0.01" in str(err.value) and "seed: 0 -> 5" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_foreign_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a training run directory"):
        RunDir(tmp_path).claim(config())
    assert not (tmp_path / "run.json").exists()


def test_second_trainer_on_the_same_directory_is_refused(tmp_path):
    holder = RunDir(tmp_path / "run")
    holder.claim(config())
    try:
        with pytest.raises(UserError, match=r"is in use by pid \d+"):
            RunDir(tmp_path / "run").claim(config())
    finally:
        holder.release()
