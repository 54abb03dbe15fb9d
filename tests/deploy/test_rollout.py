"""``python -m deploy converge`` input handling (its loading path runs in the local multi-replica test)."""
from __future__ import annotations

import pytest

from common.errors import UserError
from deploy.rollout import main, resolve


def test_a_service_resolves_to_one_url_per_address():
    assert resolve("localhost:8000") in (["127.0.0.1:8000"], ["127.0.0.1:8000", "::1:8000"])
    with pytest.raises(UserError, match=r"--service 'triton-pods': expected HOST:PORT"):
        resolve("triton-pods")
    assert resolve("no-such-host.invalid:8000") == []      # a headless Service without ready pods


def test_converge_needs_the_replicas_named(tmp_path):
    with pytest.raises(UserError, match=r"name the replicas: --service HOST:PORT"):
        main(["--repository", "s3://127.0.0.1:9/models/repo", "--package", str(tmp_path)])
