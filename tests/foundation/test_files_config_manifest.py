"""common/: atomic writes that never leave half a file, configuration errors that name the field, manifest checks."""
from __future__ import annotations

import json
import os

import pytest
from pydantic import BaseModel, Field

from common.config import load_config
from common.errors import UserError
from common.files import atomic_write_bytes, atomic_writer, publish_dir, staging_dir
from common.manifest import read_manifest


def test_a_failed_atomic_write_leaves_the_previous_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"good")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("crash in the middle of a write")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_publish_dir_moves_a_complete_directory_and_never_replaces_one(tmp_path):
    staging = staging_dir(tmp_path, "v1")
    (staging / "model.onnx").write_bytes(b"weights")
    publish_dir(staging, tmp_path / "1")
    assert (tmp_path / "1" / "model.onnx").read_bytes() == b"weights" and not staging.exists()
    again = staging_dir(tmp_path, "v1")
    with pytest.raises(FileExistsError):
        publish_dir(again, tmp_path / "1")
    assert (tmp_path / "1" / "model.onnx").read_bytes() == b"weights"


class Optimizer(BaseModel):
    lr: float = Field(1e-3, gt=0)


class Run(BaseModel):
    batch_size: int = Field(64, ge=1)
    optimizer: Optimizer = Optimizer()


def test_configuration_errors_name_the_file_the_field_and_the_value(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("batch_size = 0\n[optimizer]\nlr = -0.1\n")
    with pytest.raises(UserError) as info:
        load_config(Run, bad)
    message = str(info.value)
    assert "run.toml: batch_size: Input should be greater than or equal to 1 (got 0)" in message
    assert "optimizer.lr: Input should be greater than 0 (got -0.1)" in message
    assert load_config(Run, None, {"optimizer.lr": 0.5, "batch_size": None}).optimizer.lr == 0.5
    with pytest.raises(UserError, match=r"does not exist \(expected a \.toml, \.yaml or \.json file\)"):
        load_config(Run, tmp_path / "missing.toml")
    scalar = tmp_path / "scalar.toml"
    scalar.write_text("optimizer = 5\n")  # a flag that sets optimizer.lr needs a table there
    with pytest.raises(UserError, match=r"scalar\.toml: optimizer must be a table to set optimizer\.lr, got 5"):
        load_config(Run, scalar, {"optimizer.lr": 0.5})
    broken = tmp_path / "broken.yaml"
    broken.write_text("batch_size: [1,\n")
    with pytest.raises(UserError, match=r"broken\.yaml: cannot parse YAML"):
        load_config(Run, broken)


def test_the_manifest_is_verified_against_the_files_it_names(tmp_path):
    with pytest.raises(UserError, match=r"does not exist \(expected the --run-dir of `python -m training`\)"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(UserError, match=r"manifest\.json is missing: the training run has not exported weights yet"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"not valid JSON"):
        read_manifest(tmp_path)
    manifest = {
        "model": "digits", "arch": {}, "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}], "labels": ["0"],
        "weights": {"file": "model.safetensors", "sha256": "0" * 64}, "metrics": {}, "data_version": "d",
        "code_version": "c", "created_at": "now"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"weights\.file names .*model\.safetensors, which does not exist"):
        read_manifest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"changed after export")
    with pytest.raises(UserError, match=r"weights\.sha256 is 000000000000… but .* hashes to .* \(the export was interrupted"):
        read_manifest(tmp_path)
    manifest["inputs"][0]["name"] = "input.1"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"inputs\.0\.name: String should match pattern"):
        read_manifest(tmp_path, verify=False)
