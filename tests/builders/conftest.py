"""Shared fixtures: one trained digits run, one small textclf run, and a repository built from them (per session).

Training is a short in-test loop (tests/builders/trainer.py) followed by the real export, so every test works on the
same files the trainer hands over. Runs and the published repository are read-only for tests: a test that changes a
repository copies it first (:func:`copy_repository`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.builders.trainer import DIGITS_ARCH, TEXTCLF_ARCH, TEXTCLF_DATA, train_run


def small_settings(work_dir: Path, **sections):
    """Build settings for tests: quick latency measurement, builds under ``work_dir``."""
    from builders.settings import BuildConfig

    # a queue timeout far above the 2 s default: other work on a shared 2-core CI machine must not turn into
    # rejected requests in tests that assert zero failures
    data = {"publish": {"work_dir": str(work_dir), "keep_versions": 3},
            "quantize": {"latency_iterations": 5}, "tensorrt": {"mode": "auto"},
            "serving": {"dynamic_batching": {"queue": {"timeout_microseconds": 60_000_000}}}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)  # one level deep is all the tests need
    return BuildConfig.model_validate(data)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs") / "digits", "digits", DIGITS_ARCH, {}, steps=200)


@pytest.fixture(scope="session")
def textclf_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs") / "textclf", "textclf", TEXTCLF_ARCH, TEXTCLF_DATA, steps=150)


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, digits_run, textclf_run) -> Path:
    """A repository with digits v1 and the textclf family v1, built through the whole pipeline."""
    from builders.pipeline import BuildRequest, build

    root = tmp_path_factory.mktemp("built")
    repository = root / "model_repository"
    settings = small_settings(root / "builds")
    for run in (digits_run, textclf_run):
        build(BuildRequest(run_dir=run, repository=repository, settings=settings, quiet=True))
    return repository


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def tree_state(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: equal states mean the directory was left exactly as it was."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
