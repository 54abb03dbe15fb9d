"""The merged-model folder is replaced as a whole: a failed build leaves the old one, a crash between the two renames
is undone at the next export, and staging leftovers are removed."""
from __future__ import annotations

import pytest

from training.finetune import recover_dir, replace_dir


def fill_with(text):
    def fill(staging):
        (staging / "model.safetensors").write_text(text)
        (staging / "config.json").write_text("{}")
    return fill


def test_replace_swaps_the_whole_folder_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "hf"
    replace_dir(target, fill_with("v1"))
    replace_dir(target, fill_with("v2"))
    assert (target / "model.safetensors").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # published folders are not private mkdtemp ones


def test_a_failing_build_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "hf"
    replace_dir(target, fill_with("v1"))

    def broken(staging):
        (staging / "model.safetensors").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_dir(target, broken)
    assert (target / "model.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_crash_between_the_renames_is_undone(tmp_path):
    target = tmp_path / "hf"
    replace_dir(target, fill_with("v1"))
    target.rename(tmp_path / ".hf.previous")  # as if killed after moving the old folder aside
    (tmp_path / ".hf.abc123.staging").mkdir()  # and with a staging folder left over
    recover_dir(target)
    assert (target / "model.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
