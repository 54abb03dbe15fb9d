"""The build pipeline on real training runs: export + parity, INT8, gate, bad input, publication, rollback, lint."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import GateFailure, UserError, run_cli
from builders.onnx_graph import read_signature
from builders.pipeline import BuildRequest, build
from builders.repository import versions
from tests.builders.conftest import copy_repository, small_settings, tree_state
from tests.builders.trainer import DIGITS_ARCH, train_run

pytestmark = pytest.mark.slow  # trains the session's runs and builds through the whole pipeline


def lineage(repository: Path, model: str, version: int) -> dict:
    return json.loads((repository / model / str(version) / "lineage.json").read_text())


def test_onnx_has_manifest_names_dynamic_axes_and_matches_pytorch(built_repository):
    import onnxruntime as ort

    digits = read_signature(built_repository / "digits" / "1" / "model.onnx")
    assert list(digits.inputs) == ["image"] and list(digits.outputs) == ["logits", "probabilities"]
    assert digits.inputs["image"].shape == ("batch", 1, 8, 8)
    text = read_signature(built_repository / "textclf" / "1" / "model.onnx")
    assert text.inputs["input_ids"].shape == ("batch", "sequence")
    session = ort.InferenceSession(str(built_repository / "textclf" / "1" / "model.onnx"))
    assert session.run(None, {"input_ids": np.full((3, 17), 2, dtype=np.int64)})[0].shape == (3, 4)
    for model in ("digits", "textclf"):
        record = lineage(built_repository, model, 1)
        assert record["onnx"]["ir_version"] <= 10 and record["onnx"]["opset"] == 18
        parity = record["parity"]
        assert parity["passed"] and parity["samples"] >= 256 and parity["argmax_agreement"] == 1.0
        for output in parity["outputs"]:
            assert output["max_abs_error"] <= output["atol"], output
        assert record["gate"]["passed"] and record["checkpoint"]["weights_sha256"]
        assert record["environment"]["packages"]["onnxruntime"]


def test_textclf_family_is_published_together_and_lints_clean(built_repository):
    from builders.lint import lint_all

    for member in ("textclf", "textclf_tokenizer", "textclf_labels", "textclf_text", "digits"):
        assert versions(built_repository / member) == [1], member
        assert lint_all(built_repository / member) == [], member
    assert json.loads((built_repository / "textclf_labels" / "1" / "labels.json").read_text())[0] == "billing"


def test_parity_report_catches_drift_and_nan():
    from builders.parity import compare
    from builders.runners import Batch
    from builders.settings import ParityConfig

    batches = [Batch([np.zeros((4, 2), np.float32)], np.zeros(4, np.int64))]
    reference = lambda inputs: [np.array([[1.0, 0.0]] * 4, np.float32)]
    drift = lambda inputs: [np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]], np.float32)]
    nan = lambda inputs: [np.array([[np.nan, 0.0]] * 4, np.float32)]
    cfg = ParityConfig()
    report = compare(reference, drift, batches, ["logits"], cfg.tolerance, 0.999, "torch", "onnx")
    assert not report.passed and report.argmax_agreement == 0.75
    assert any("2/8 elements outside" in r for r in report.failures())
    report = compare(reference, nan, batches, ["logits"], cfg.tolerance, 0.999, "torch", "fp16")
    assert any("4 NaN/Inf values" in r for r in report.failures())


def test_int8_is_measured_and_refused_beyond_the_margin(built_repository):
    from builders.quantize import decide

    int8 = lineage(built_repository, "digits", 1)["int8"]
    assert int8["int8_size_bytes"] < int8["fp32_size_bytes"]
    assert int8["accepted"] and abs(int8["accuracy_drop"]) <= int8["max_accuracy_drop"]
    assert (built_repository / "digits" / "1" / "model.int8.onnx").is_file()
    assert (built_repository / "digits" / "configs" / "cpu_int8.pbtxt").is_file()
    accepted, reason = decide(0.95, 0.93, 0.01)
    assert not accepted and "accuracy drop 0.0200 exceeds quantize.max_accuracy_drop 0.01" in reason


def _corrupt_weights(run: Path) -> str:
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(data))
    return "weights.sha256"


def _wrong_arch(run: Path) -> str:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["arch"]["hidden"] = 48
    (run / "manifest.json").write_text(json.dumps(manifest))
    return "does not match the architecture in manifest.json"


def _broken_manifest(run: Path) -> str:
    (run / "manifest.json").write_text("{not json")
    return "manifest.json: not valid JSON"


def _missing_weights(run: Path) -> str:
    (run / "model.safetensors").unlink()
    return "weights.file names"


@pytest.mark.parametrize("damage", [_corrupt_weights, _wrong_arch, _broken_manifest, _missing_weights])
def test_bad_input_stops_with_the_file_and_field_and_leaves_the_repository_alone(built_repository, digits_run,
                                                                                  tmp_path, damage):
    repository = copy_repository(built_repository, tmp_path / "repo")
    before = tree_state(repository)
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    expected = damage(run)
    with pytest.raises(UserError) as info:
        build(BuildRequest(run_dir=run, repository=repository, settings=small_settings(tmp_path / "builds"), quiet=True))
    assert expected in str(info.value) and str(run) in str(info.value)
    assert tree_state(repository) == before
    if damage is not _broken_manifest:  # the manifest names the model; with it unreadable no build folder exists
        [build_dir] = list((tmp_path / "builds" / "digits").iterdir())
        status = json.loads((build_dir / "status.json").read_text())["steps"]
        assert status[0]["name"] == "load" and status[0]["status"] == "failed"
        script = (build_dir / "reproduce.sh").read_text()
        assert "-m builders build --run-dir" in script and str(run) in script


def test_gate_refuses_a_worse_checkpoint_and_the_serving_version_stays(built_repository, tmp_path, capsys):
    from builders.__main__ import main

    repository = copy_repository(built_repository, tmp_path / "repo")
    before = tree_state(repository)
    worse = train_run(tmp_path / "worse", "digits", DIGITS_ARCH, {}, steps=3)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["build", "--run-dir", str(worse), "--repository", str(repository),
                       "--work-dir", str(tmp_path / "builds"), "--quiet"])
    assert exit_info.value.code == GateFailure.exit_code
    err = capsys.readouterr().err
    assert "promotion gate refused 'digits'" in err and "below serving version 1's" in err
    assert "nothing was published" in err and "reproduce.sh" in err
    assert tree_state(repository) == before


def test_rebuilding_the_serving_weights_with_the_same_settings_publishes_nothing(built_repository, digits_run,
                                                                                  tmp_path):
    repository = copy_repository(built_repository, tmp_path / "repo")
    before = tree_state(repository)
    settings = small_settings(tmp_path / "builds")  # the settings version 1 was built with
    report = build(BuildRequest(run_dir=digits_run, repository=repository, settings=settings, quiet=True))
    assert report["unchanged"]["version"] == 1 and "published" not in report
    assert tree_state(repository) == before
    forced = build(BuildRequest(run_dir=digits_run, repository=repository, settings=settings, quiet=True, force=True))
    assert forced["published"]["version"] == 2
    changed = small_settings(tmp_path / "builds", quantize={"enabled": False})
    assert build(BuildRequest(run_dir=digits_run, repository=repository, settings=changed, quiet=True)
                 )["published"]["version"] == 3


def test_publish_keeps_k_versions_and_rollback_serves_a_kept_one(built_repository, digits_run, tmp_path, capsys):
    from builders.__main__ import main

    repository = copy_repository(built_repository, tmp_path / "repo")
    settings = small_settings(tmp_path / "builds", publish={"keep_versions": 2}, quantize={"enabled": False})
    for _ in range(2):
        report = build(BuildRequest(run_dir=digits_run, repository=repository, settings=settings, quiet=True,
                                    force=True))
    assert report["published"]["version"] == 3 and report["published"]["pruned"] == {"digits": [1]}
    assert versions(repository / "digits") == [2, 3]
    assert not (repository / "digits" / "configs" / "cpu_int8.pbtxt").exists(), "stale config of an older build"
    assert not list((repository / "digits").glob(".*staging")), "no staging leftovers"

    run_cli_ok = lambda argv: _run_ok(main, argv)
    run_cli_ok(["rollback", "--repository", str(repository), "--model", "digits", "--version", "2",
                "--keep", "3", "--work-dir", str(tmp_path / "builds")])
    assert versions(repository / "digits") == [2, 3, 4]
    v2, v4 = lineage(repository, "digits", 2), lineage(repository, "digits", 4)
    assert v4["rollback_of"] == 2 and v4["onnx"]["sha256"] == v2["onnx"]["sha256"]
    assert (repository / "digits" / "4" / "model.onnx").read_bytes() == (repository / "digits" / "2" / "model.onnx").read_bytes()
    capsys.readouterr()
    run_cli_ok(["versions", "--repository", str(repository), "--model", "digits"])
    out = capsys.readouterr().out
    assert "* v4" in out and "rollback of v2" in out

    with pytest.raises(UserError, match=r"model 'digits' has no version 1 .*kept versions: 2, 3, 4"):
        main(["rollback", "--repository", str(repository), "--model", "digits", "--version", "1"])


def _run_ok(main, argv):
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv)
    assert info.value.code == 0


def test_linter_names_file_and_field_for_hand_broken_configs(built_repository, tmp_path, capsys):
    from builders.__main__ import main

    repository = copy_repository(built_repository, tmp_path / "repo")
    config = repository / "digits" / "config.pbtxt"
    text = config.read_text()
    broken = text.replace("dims: 1\n  dims: 8\n  dims: 8", "dims: 8\n  dims: 8", 1)
    broken = broken.replace('name: "logits"', 'name: "output_0"', 1)
    config.write_text(broken)
    onnxruntime = repository / "digits" / "configs" / "onnxruntime.pbtxt"
    onnxruntime.write_text(onnxruntime.read_text().replace("max_queue_size: 1024", "max_queue_size: 0", 1))
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["lint", str(repository / "digits"), "--config-name", "nonexistent"])
    assert info.value.code != 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["lint", str(repository / "digits")])
    assert info.value.code == UserError.exit_code
    out = capsys.readouterr().out
    assert "config.pbtxt: input[0].dims: [8, 8] but 1/model.onnx input 'image' has shape [batch, 1, 8, 8]" in out
    assert "config.pbtxt: output[0].name: 'output_0' is not an output of 1/model.onnx" in out
    assert "configs/onnxruntime.pbtxt: dynamic_batching.default_queue_policy.max_queue_size: unbounded queue" in out
    assert "config.pbtxt: model_warmup[0].inputs['image'].dims: [1, 8, 8] does not fit input 'image' dims [8, 8]" in out
    assert "\nconfig.pbtxt: dynamic_batching.default_queue_policy" not in out.replace(str(repository / "digits") + "/", "\n")
    with pytest.raises(SystemExit):  # the python-backend config has no queue policy unless asked for
        run_cli(main, ["lint", str(repository / "digits"), "--config-name", "cpu_int8", "--require-python-queue-policy"])
    assert "configs/cpu_int8.pbtxt: dynamic_batching.default_queue_policy.max_queue_size: unbounded queue" in capsys.readouterr().out


def test_config_with_a_typo_is_a_finding_with_line_and_field(built_repository, tmp_path):
    from builders.lint import lint_model_dir

    repository = copy_repository(built_repository, tmp_path / "repo")
    config = repository / "digits" / "configs" / "onnxruntime.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batch_sizee", 1))
    [finding] = lint_model_dir(repository / "digits", "onnxruntime")
    assert "configs/onnxruntime.pbtxt" in str(finding) and "max_batch_sizee" in str(finding)


def test_a_padded_input_that_is_not_ragged_is_a_finding(built_repository, tmp_path):
    from builders.lint import lint_model_dir

    repository = copy_repository(built_repository, tmp_path / "repo")
    assert lint_model_dir(repository / "textclf") == []
    config = repository / "textclf" / "config.pbtxt"
    config.write_text(config.read_text().replace("allow_ragged_batch: true", "allow_ragged_batch: false", 1))
    [finding] = lint_model_dir(repository / "textclf")
    assert "config.pbtxt: input['input_ids'].allow_ragged_batch: false: requests of different lengths" in str(finding)


def test_an_operator_the_exporter_cannot_handle_is_named(digits_run, tmp_path):
    import torch

    from builders.onnx_export import export
    from builders.settings import ExportConfig
    from builders.sources.training_run import TrainingRunSource

    class Unexportable(torch.nn.Module):
        def forward(self, image):
            flat = image.flatten(1)[:, :9].reshape(-1, 3, 3)
            scores = torch.linalg.eigvals(flat).real
            return scores, scores.softmax(-1)

    source = TrainingRunSource(digits_run)
    source._model = Unexportable()
    with pytest.raises(UserError, match=r"cannot export model 'digits' \(training-run .*\) to ONNX opset 18: operator "
                                        r"aten\.linalg_eig has no ONNX translation"):
        export(source, tmp_path / "model.onnx", ExportConfig())
    assert not (tmp_path / "model.onnx").exists()


def test_reproduce_script_of_a_failed_step_fails_the_same_way(built_repository, digits_run, tmp_path):
    import subprocess

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    _corrupt_weights(run)
    repository = tmp_path / "repo"
    with pytest.raises(UserError):
        build(BuildRequest(run_dir=run, repository=repository, settings=small_settings(tmp_path / "builds"), quiet=True,
                           overrides=["--work-dir", str(tmp_path / "builds")]))
    [script] = list((tmp_path / "builds" / "digits").glob("*/reproduce.sh"))
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == UserError.exit_code
    assert "weights.sha256" in result.stderr and "Traceback" not in result.stderr
    assert not repository.exists()


def test_quantize_command_writes_the_int8_file_and_its_report(built_repository, digits_run, tmp_path, capsys):
    from builders.__main__ import main

    _run_ok(main, ["quantize", "--run-dir", str(digits_run), "--onnx", str(built_repository / "digits" / "1" / "model.onnx"),
                   "--output", str(tmp_path / "q")])
    report = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert report["accepted"] and report["int8_size_bytes"] < report["fp32_size_bytes"]
    assert "accepted:" in capsys.readouterr().out


def test_a_family_is_published_whole_or_not_at_all(built_repository, tmp_path, monkeypatch):
    from builders import repository as repo_mod

    repository = copy_repository(built_repository, tmp_path / "repo")
    package = repo_mod.package_from_version(repository, "textclf", 1, tmp_path / "package")
    assert package.members == ("textclf_tokenizer", "textclf_labels", "textclf", "textclf_text")
    before = tree_state(repository)
    real = repo_mod._publish_member

    def failing(package, member, repository, number):
        if member == "textclf":
            raise OSError("disk full")
        return real(package, member, repository, number)

    monkeypatch.setattr(repo_mod, "_publish_member", failing)
    with pytest.raises(OSError, match="disk full"):
        repo_mod.publish_package(package, repository)
    assert tree_state(repository) == before
    assert not list(repository.rglob(".*")), "no hidden leftovers"


def test_published_folders_are_readable_by_other_users(built_repository):
    import stat

    for path in (built_repository / "digits", built_repository / "digits" / "1", built_repository / "textclf_text" / "1"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & stat.S_IROTH and mode & stat.S_IXOTH, f"{path} is {oct(mode)}"


def test_publish_refuses_a_package_whose_config_disagrees_with_its_artifact(built_repository, tmp_path, capsys):
    from builders.__main__ import main
    from builders.repository import package_from_version

    repository = copy_repository(built_repository, tmp_path / "repo")
    package = package_from_version(repository, "digits", 1, tmp_path / "package")
    config = package.model_dir("digits") / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: 10", "dims: 12", 1))
    before = tree_state(repository)
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["publish", "--package", str(package.root), "--repository", str(repository)])
    assert info.value.code == UserError.exit_code
    err = capsys.readouterr().err
    assert "nothing published" in err
    assert "digits/config.pbtxt: output[0].dims: [12] but version/model.onnx output 'logits' has shape [batch, 10]" in err
    assert tree_state(repository) == before


def test_a_bad_package_file_is_one_clear_error_and_its_names_cannot_leave_the_repository(tmp_path):
    from builders.repository import Package

    cases = {
        '{"primary": "m"}': "package.json: members: Field required",
        '{"primary": "m", "members": ["../outside", "m"]}': "members.0: String should match pattern",
        '{"primary": "q", "members": ["m"]}': "primary 'q' is not one of the members",
        "{broken": "package.json: cannot parse JSON",
    }
    for text, message in cases.items():
        (tmp_path / "package.json").write_text(text)
        with pytest.raises(UserError, match=re.escape(message)):
            Package.read(tmp_path)
