"""Live rollout on the real Triton (explicit model control): N+1 under load with zero failed requests, and a version
that cannot load is retracted while N keeps serving."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from clients.serve import ServerConfig, TritonServer
from common.errors import UserError
from common.net import free_port
from builders.pipeline import BuildRequest, build, roll_out
from builders.repository import Package, publish_package, versions
from tests.builders.conftest import copy_repository, small_settings

pytestmark = pytest.mark.slow

LOAD_SECONDS = 30.0
CLIENT_THREADS = 4


class Load:
    """Closed-loop HTTP clients against ``digits`` for a fixed time; counts failures and served versions."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = url, seconds
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(CLIENT_THREADS)]

    def _loop(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url, network_timeout=30)
        image = np.random.default_rng(0).integers(0, 17, (1, 1, 8, 8)).astype(np.float32)
        tensor = httpclient.InferInput("image", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(image)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            try:
                response = client.infer("digits", [tensor])
                with self._lock:
                    self.ok += 1
                    self.versions.append((time.monotonic(), response.get_response()["model_version"]))
            except Exception as exc:
                with self._lock:
                    self.failures.append(str(exc))
        client.close()

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self._threads:
            thread.join(self.seconds + 60)


@pytest.fixture(scope="module")
def live(built_repository, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    repository = copy_repository(built_repository, root / "repo")
    config = ServerConfig(repository=repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          log_file=root / "server.log", model_control="explicit", exit_timeout_s=1)
    with TritonServer(config) as server:
        yield server, repository, root


def _served_versions(url: str, model: str) -> list[str]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        return client.get_model_metadata(model)["versions"]
    finally:
        client.close()


def test_publishing_under_load_swaps_to_the_new_version_without_a_failed_request(live, digits_run):
    server, repository, root = live
    load = Load(server.http_url, LOAD_SECONDS).start()
    time.sleep(3.0)
    report = build(BuildRequest(run_dir=digits_run, repository=repository, triton_url=server.http_url, quiet=True,
                                settings=small_settings(root / "builds", quantize={"enabled": False})))
    published_at = time.monotonic()
    load.join()
    assert report["published"]["version"] == 2
    assert report["steps"][-1] == {**report["steps"][-1], "name": "rollout", "status": "ok"}
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    assert load.ok > 50
    seen = [v for _, v in load.versions]
    assert "1" in seen and "2" in seen
    assert all(v == "2" for t, v in load.versions if t > published_at + 0.5)
    assert _served_versions(server.http_url, "digits") == ["2"]


def test_a_version_that_fails_to_load_is_retracted_and_the_previous_one_keeps_serving(live, digits_run):
    server, repository, root = live
    report = build(BuildRequest(run_dir=digits_run, repository=repository, publish=False, quiet=True,
                                settings=small_settings(root / "builds", quantize={"enabled": False})))
    package = Package.read(report["package"]["root"])
    model_py = package.version_dir("digits") / "model.py"
    model_py.write_text("raise RuntimeError('this version cannot start')\n")
    serving = versions(repository / "digits")[-1]
    published = publish_package(package, repository)
    assert published.version == serving + 1
    with pytest.raises(UserError, match=rf"could not load model 'digits' version {published.version}.*retracted"):
        roll_out(server.http_url, package, repository, published.version, small_settings(root / "builds"),
                 root / "failed-rollout")
    assert versions(repository / "digits")[-1] == serving, "the broken version is no longer in the repository"
    assert (root / "failed-rollout" / "retracted" / "digits" / str(published.version) / "model.py").is_file()
    # `publish --triton-url` keeping a single version: the serving one must survive the failed rollout
    from argparse import Namespace

    from builders.cli import _publish

    args = Namespace(repository=repository, triton_url=server.http_url, skip_plan_check=True)
    with pytest.raises(UserError, match="retracted"):
        _publish(package, args, small_settings(root / "builds", publish={"keep_versions": 1}))
    assert versions(repository / "digits")[-1] == serving
    assert (repository / "digits" / str(serving) / "model.py").is_file()
    assert _served_versions(server.http_url, "digits") == [str(serving)]
    load = Load(server.http_url, 2.0).start()
    load.join()
    assert load.failures == [] and {v for _, v in load.versions} == {str(serving)}


def test_text_family_rolls_out_together(live, textclf_run):
    server, repository, root = live
    report = build(BuildRequest(run_dir=textclf_run, repository=repository, triton_url=server.http_url, quiet=True,
                                settings=small_settings(root / "builds", quantize={"enabled": False})))
    assert report["published"]["version"] == 2
    for member in ("textclf", "textclf_tokenizer", "textclf_labels", "textclf_text"):
        assert _served_versions(server.http_url, member) == ["2"], member
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([["my invoice shows a double charge"]], dtype=object))
    result = client.infer("textclf_text", [tensor])
    client.close()
    assert result.as_numpy("label")[0, 0] in {b"billing", b"technical", b"account", b"shipping"}
