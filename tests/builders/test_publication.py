"""A model family publishes whole or not at all, also under ``kill -9`` (issue 17 items 2, 3, 5, 6).

A real ``python -m builders publish`` is killed with SIGKILL at every crash point of a publication in turn
(``$BUILDERS_CRASH_AT=k``, see builders.publication.crash_point); after each kill the readers report what is visible,
and the next publish (odd k) or the launcher's pre-flight (even k) brings every family back to one version.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builders.publication import CRASH_ENV, inspect, record_path, stale_folders
from builders.repository import CONFIG_SNAPSHOT, config_files, package_from_version, versions
from common.errors import UserError
from tests.builders.conftest import copy_repository

pytestmark = pytest.mark.slow  # needs the session's lean runs and repository

ROOT = Path(__file__).resolve().parents[2]
FAMILY = ("textclf_tokenizer", "textclf_labels", "textclf", "textclf_text")


def _cli(*args: str, crash_at: str | int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = str(crash_at)
    return subprocess.run([sys.executable, "-m", "builders", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def assert_whole(repository: Path) -> None:
    """Every family at the one version its record names, configs from that version, nothing Triton would refuse."""
    states = inspect(repository)
    assert states, "no family found"
    for state in states:
        assert not state.split, state.describe()
        assert state.version is not None and record_path(repository, state.primary).is_file()
        for member in state.members:
            model_dir = repository / member
            assert versions(model_dir)[-1] == state.version, (member, versions(model_dir), state.version)
            snapshot = config_files(model_dir / str(state.version) / CONFIG_SNAPSHOT)
            have = config_files(model_dir)
            assert {k: p.read_bytes() for k, p in have.items()} == {k: p.read_bytes() for k, p in snapshot.items()}
    assert not stale_folders(repository)
    assert not [p for p in repository.iterdir() if p.is_dir() and p.name.startswith(".")]


def _kill_at_every_point(package: Path, repository: Path, tmp_path: Path) -> dict:
    """Kill the publish at crash point 1, 2, ... until one completes; returns what was observed."""
    from clients.repository_check import prepare_repository

    seen = {"kills": 0, "split_reported": False, "root_staging": False}
    for k in range(1, 200):
        result = _cli("publish", "--package", str(package), "--repository", str(repository), "--skip-plan-check",
                      "--keep", "2", "--work-dir", str(tmp_path / "work"), crash_at=k)
        if result.returncode == 0:
            break
        assert result.returncode == -9, result.stderr[-2000:]
        seen["kills"] += 1
        if any(p.is_dir() and p.name.endswith(".staging") for p in repository.iterdir()):
            seen["root_staging"] = True
        split = [s for s in inspect(repository) if s.split]
        for state in split:  # readers see the split; the visible version is the recorded one, every member has it
            assert not state.missing, state.describe()
            if not seen["split_reported"] and state.leftovers and state.version is not None:
                member = next(iter(state.leftovers))
                listed = _cli("versions", "--repository", str(repository), "--model", member)
                assert listed.returncode == UserError.exit_code and "is split" in listed.stderr, listed.stderr
                linted = _cli("lint", str(repository / member))
                assert linted.returncode != 0 and "is split" in linted.stdout, linted.stdout
                seen["split_reported"] = True
        if k % 2 == 0:  # the launcher repairs before Triton starts; odd k: the next publish does
            prepare_repository(repository, say=lambda *a, **kw: None)
            assert_whole(repository)
    else:
        pytest.fail("publish never completed")
    assert_whole(repository)
    return seen


def test_kill_9_at_every_point_of_publish_leaves_every_family_at_one_version(lean_repository, tmp_path):
    repository = copy_repository(lean_repository, tmp_path / "repo")
    package = package_from_version(repository, "textclf", 1, tmp_path / "package").root
    seen = _kill_at_every_point(package, repository, tmp_path)
    assert seen["kills"] >= 15, seen  # every member's staging, rename and configs, the record, the pruning
    assert seen["split_reported"]
    record = json.loads(record_path(repository, "textclf").read_text())
    assert record["members"] == list(FAMILY) and record["version"] == versions(repository / "textclf")[-1] > 1
    assert versions(repository / "digits") == [1], "another family is never touched"


def test_kill_9_during_a_first_publication_leaves_nothing_triton_reads_and_triton_starts(lean_repository, tmp_path,
                                                                                         capsys):
    from clients.serve import ServerConfig, TritonServer
    from common.net import free_port

    repository = copy_repository(lean_repository, tmp_path / "repo")
    package = package_from_version(repository, "textclf", 1, tmp_path / "package").root
    for member in FAMILY:
        shutil.rmtree(repository / member)
    record_path(repository, "textclf").unlink()
    seen = _kill_at_every_point(package, repository, tmp_path)
    assert seen["root_staging"], "a first publication stages whole model folders at the root"
    assert versions(repository / "textclf"), "the family ends published"

    # a kill while the first members' folders are in place, a staging folder at the root: the launcher repairs and
    # Triton starts (it refused before: a hidden folder at the root is read as a model)
    for member in FAMILY:
        shutil.rmtree(repository / member)
    record_path(repository, "textclf").unlink()
    result = _cli("publish", "--package", str(package), "--repository", str(repository), "--skip-plan-check",
                  crash_at="staged textclf v1")
    assert result.returncode == -9
    assert stale_folders(repository) and (repository / "textclf_tokenizer").is_dir()
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=tmp_path / "server.log", exit_timeout_s=1)
    capsys.readouterr()
    with TritonServer(config) as server:
        assert server.models == ["digits"], "the unpublished family is gone, not half served"
    said = capsys.readouterr().out
    assert "repository: removed stale staging folder" in said and "family 'textclf' (no published version yet) was " \
        "split" in said, said
    assert_whole(repository)


def test_launcher_names_a_stray_folder_and_triton_failure_reasons_are_one_line(lean_repository, tmp_path):
    from clients.serve import ServerConfig, TritonServer
    from clients.triton_log import first_error
    from common.net import free_port

    repository = copy_repository(lean_repository, tmp_path / "repo")
    shutil.copytree(repository / "digits", repository / ".digits.tmp")
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), log_file=tmp_path / "server.log", exit_timeout_s=1)
    with pytest.raises(UserError, match=r"holds \.digits\.tmp: Triton reads every folder there as a model"):
        TritonServer(config).start()
    # loading named models only, Triton never reads the other folders: no reason to refuse
    named = config.model_copy(update={"model_control": "explicit", "load_models": ["digits"]})
    with TritonServer(named) as server:
        assert "digits" in server.models
    # what Triton itself says for it, and for a python model that cannot start (a stack follows its message)
    log = ('E1129 23:32:53.618480 13846 server.cc:241] "CudaDriverHelper has not been initialized."\n'
           "E1129 23:32:53.619493 13846 model_repository_manager.cc:1460] \"Poll failed for model directory "
           "'.digits.tmp': unexpected directory name '.digits.tmp' for model 'digits', directory name must equal "
           'model name"\n')
    assert first_error(log) == ("Triton could not read the model folder '.digits.tmp': unexpected directory name "
                                "'.digits.tmp' for model 'digits', directory name must equal model name")
    assert first_error('E1129 23:32:53.618480 13846 server.cc:241] "CudaDriverHelper has not been initialized."') \
        is None

    shutil.rmtree(repository / ".digits.tmp")
    for member in FAMILY:
        shutil.rmtree(repository / member)
    record_path(repository, "textclf").unlink()
    (repository / "digits" / "1" / "model.py").write_text("raise RuntimeError('this version cannot start')\n")
    with pytest.raises(UserError) as info:
        TritonServer(config).start()
    message = str(info.value)
    assert "Triton failed to load model 'digits' version 1: " in message and "this version cannot start" in message
    assert "\n" not in message and "\\n" not in message and "At:" not in message and "CudaDriverHelper" not in message


def test_rollback_verifies_kept_versions_and_lint_checks_every_kept_version(lean_repository, tmp_path):
    from tests.builders.conftest import tree_state

    base = copy_repository(lean_repository, tmp_path / "base")
    package = package_from_version(base, "textclf", 1, tmp_path / "package").root
    assert _cli("publish", "--package", str(package), "--repository", str(base), "--skip-plan-check").returncode == 0
    cases = {
        "truncated model.onnx": (lambda r: (r / "textclf/1/model.onnx").write_bytes(
            (r / "textclf/1/model.onnx").read_bytes()[:1000]), "textclf/1/model.onnx does not match its SHA-256"),
        "garbage snapshot": (lambda r: (r / "textclf/1/model_config/config.pbtxt").write_text("max_batch_size: [oops"),
                             "textclf/1/model_config/config.pbtxt does not match its SHA-256"),
        "lineage deleted": (lambda r: (r / "textclf/1/lineage.json").unlink(),
                            "textclf/1/lineage.json is missing, so neither its family nor its files can be verified"),
    }
    for name, (damage, message) in cases.items():
        repository = copy_repository(base, tmp_path / name.replace(" ", "-"))
        damage(repository)
        before = tree_state(repository)
        result = _cli("rollback", "--repository", str(repository), "--model", "textclf", "--version", "1",
                      "--work-dir", str(tmp_path / "work"))
        assert result.returncode == UserError.exit_code, (name, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
        assert tree_state(repository) == before, f"{name}: nothing published"
        linted = _cli("lint", str(repository / "textclf"))
        assert linted.returncode != 0 and "textclf/1" in linted.stdout, (name, linted.stdout)
    # a garbage snapshot whose hashes were forged too is still refused: the snapshot is linted before publishing
    repository = copy_repository(base, tmp_path / "forged")
    snapshot = repository / "textclf/1/model_config/config.pbtxt"
    snapshot.write_text(snapshot.read_text().replace("dims: 4", "dims: 9", 1))
    lineage = json.loads((repository / "textclf/1/lineage.json").read_text())
    from common.files import sha256_file

    lineage["publication"]["files"]["model_config/config.pbtxt"] = sha256_file(snapshot)
    (repository / "textclf/1/lineage.json").write_text(json.dumps(lineage))
    result = _cli("rollback", "--repository", str(repository), "--model", "textclf", "--version", "1",
                  "--work-dir", str(tmp_path / "work"))
    assert result.returncode == UserError.exit_code and "does not pass the linter" in result.stderr, result.stderr
    assert "dims: [9]" in result.stderr
    # an intact kept version rolls back, the whole family
    result = _cli("rollback", "--repository", str(base), "--model", "textclf", "--version", "1",
                  "--work-dir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    assert {versions(base / m)[-1] for m in FAMILY} == {3}
    assert_whole(base)


def _read_only(path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m builders ARGS`` with ``path`` mounted read-only (a private mount namespace when root)."""
    command = " ".join([sys.executable, "-m", "builders", *args])
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: cannot make a read-only repository")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"running as root and unshare -m is not permitted here: {probe.stderr.decode().strip()}")
        script = f"mount --bind {path} {path} && mount -o remount,ro,bind {path} && {command}"
        return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    path.chmod(0o555)
    try:
        return subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        path.chmod(0o755)


def test_a_read_only_repository_is_one_line_before_any_work(lean_repository, lean_runs, tmp_path):
    import time

    repository = copy_repository(lean_repository, tmp_path / "repo")
    package = package_from_version(repository, "textclf", 1, tmp_path / "package").root
    work = ["--work-dir", str(tmp_path / "work")]
    runs = {
        "publish": ["publish", "--package", str(package), "--repository", str(repository), *work],
        "rollback": ["rollback", "--repository", str(repository), "--model", "textclf", "--version", "1", *work],
        "build": ["build", "--run-dir", str(lean_runs["digits"]), "--repository", str(repository), "--force", *work],
    }
    for name, args in runs.items():
        started = time.monotonic()
        result = _read_only(repository, *args)
        assert result.returncode == UserError.exit_code, (name, result.stderr[-3000:])
        lines = result.stderr.strip().splitlines()
        assert lines == [f"error: model repository {repository} is not writable (Read-only file system): {name} needs "
                         "to write a new version there; nothing was changed"] or os.geteuid() != 0, (name, lines)
        assert len(lines) == 1 and "not writable" in lines[0] and "Traceback" not in result.stderr, (name, lines)
        assert not (tmp_path / "work" / "digits").exists(), f"{name}: the build pipeline did not run"
        assert time.monotonic() - started < 30, name
