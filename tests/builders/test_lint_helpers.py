"""The linter checks the python-backend helpers against their own files (issue 16 item 4) and, in a repository, that an
ensemble names the exact versions it runs (issue 17 item 1)."""
from __future__ import annotations

import json
import re

import pytest

from builders.lint import lint_all
from tests.builders.conftest import copy_repository

pytestmark = pytest.mark.slow  # needs the session's lean repository


def _findings(model_dir) -> list[str]:
    return [str(f) for f in lint_all(model_dir)]


def test_the_published_family_has_no_findings(lean_repository):
    for member in ("textclf_tokenizer", "textclf_labels", "textclf", "textclf_text"):
        assert _findings(lean_repository / member) == [], member


def test_labels_config_width_is_checked_against_labels_json(lean_repository, tmp_path):
    repository = copy_repository(lean_repository, tmp_path / "repo")
    config = repository / "textclf_labels" / "config.pbtxt"
    config.write_text(re.sub(r"dims: 4\b", "dims: 7", config.read_text(), count=1))
    assert "config.pbtxt: input[0].dims: [7] but 1/labels.json has 4 labels" in _findings(repository / "textclf_labels")


def _edit_tokenizer(repository, change) -> None:
    path = repository / "textclf_tokenizer" / "1" / "tokenizer.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_tokenizer_output_length_is_checked_against_the_model_it_feeds(lean_repository, tmp_path):
    repository = copy_repository(lean_repository, tmp_path / "longer")
    _edit_tokenizer(repository, lambda d: d["truncation"].update(max_length=4096))
    findings = _findings(repository / "textclf_text")
    assert any("'textclf_tokenizer' emits up to 4096 ids (1/tokenizer.json truncation.max_length) but 'textclf' input "
               "'input_ids' takes at most" in f for f in findings), findings

    repository = copy_repository(lean_repository, tmp_path / "unbounded")
    _edit_tokenizer(repository, lambda d: d.update(truncation=None))
    findings = _findings(repository / "textclf_tokenizer")
    assert any("1/tokenizer.json does not truncate" in f for f in findings), findings


def test_an_ensemble_in_a_repository_must_name_exact_versions(lean_repository, tmp_path):
    repository = copy_repository(lean_repository, tmp_path / "repo")
    config = repository / "textclf_text" / "config.pbtxt"
    text = re.sub(r"model_version: \d+", "model_version: -1", config.read_text())
    config.write_text(text.replace("specific {\n    versions: 1\n  }", "latest {\n    num_versions: 1\n  }"))
    findings = _findings(repository / "textclf_text")
    assert any("version_policy: not 'specific'" in f for f in findings), findings
    assert sum("model_version: -1 (latest of" in f for f in findings) == 3, findings
    config.write_text(re.sub(r"model_version: -?\d+", "model_version: 7", text))
    assert any("model_version: 7 but 'textclf' has no version 7" in f for f in _findings(repository / "textclf_text"))
