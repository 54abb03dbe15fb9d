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

    from builders.cli_options import publish

    args = Namespace(repository=repository, triton_url=server.http_url, skip_plan_check=True)
    with pytest.raises(UserError, match="retracted"):
        publish(package, args, small_settings(root / "builds", publish={"keep_versions": 1}))
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
    # the ensemble serves only version 2; the models it composes keep version 1 loaded beside 2 (an ensemble version
    # names its exact member versions, and version 1 ran on members 1 until the ensemble switched)
    assert _served_versions(server.http_url, "textclf_text") == ["2"]
    for member in ("textclf", "textclf_tokenizer", "textclf_labels"):
        assert sorted(_served_versions(server.http_url, member)) == ["1", "2"], member
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([["my invoice shows a double charge"]], dtype=object))
    result = client.infer("textclf_text", [tensor])
    client.close()
    assert result.as_numpy("label")[0, 0] in {b"billing", b"technical", b"account", b"shipping"}


class TextLoad(Load):
    """Closed-loop HTTP clients on ``textclf_text`` with one fixed message; keeps every answer's reported version,
    label and probabilities, to be matched against what that version computes."""

    TEXT = "my invoice shows a double charge"

    def __init__(self, url: str, seconds: float):
        super().__init__(url, seconds)
        self.answers: list[tuple[str, bytes, np.ndarray]] = []

    def _loop(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url, network_timeout=30)
        tensor = httpclient.InferInput("text", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[self.TEXT]], dtype=object))
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            try:
                result = client.infer("textclf_text", [tensor])
                with self._lock:
                    self.ok += 1
                    self.answers.append((result.get_response()["model_version"], result.as_numpy("label")[0, 0],
                                         result.as_numpy("probabilities")[0]))
            except Exception as exc:
                with self._lock:
                    self.failures.append(str(exc))
        client.close()


def _distinguishable_package(repository, number: int, root):
    """Kept version ``number`` of the textclf family with the classifier's output bias shifted and every label's case
    flipped: answers of the published copy cannot be mistaken for those of ``number``."""
    import json

    import onnx
    from onnx import numpy_helper

    from builders.repository import package_from_version

    package = package_from_version(repository, "textclf", number, root / f"shifted-from-{number}")
    path = package.version_dir("textclf") / "model.onnx"
    model = onnx.load(path)
    bias = next(i for i in model.graph.initializer if i.name == "head.bias")
    shift = np.linspace(3.0, -3.0, numpy_helper.to_array(bias).size).astype(np.float32)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + shift, bias.name))
    onnx.save(model, path)
    labels = package.version_dir("textclf_labels") / "labels.json"
    labels.write_text(json.dumps([x.lower() if x.isupper() else x.upper() for x in json.loads(labels.read_text())]))
    return package


def _computed_by(repository, version: str, text: str):
    """What textclf_text version ``version`` computes for ``text``: its own tokenizer, ONNX file and labels."""
    import json

    import onnxruntime as ort
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(repository / "textclf_tokenizer" / version / "tokenizer.json")).encode(text).ids
    session = ort.InferenceSession(str(repository / "textclf" / version / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"input_ids": np.array([ids], dtype=np.int64)})[0][0]
    labels = json.loads((repository / "textclf_labels" / version / "labels.json").read_text())
    return probabilities, labels[int(probabilities.argmax())].encode()


def test_every_answer_comes_from_the_version_it_reports_through_rollouts_a_kill_and_a_rollback(live, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from builders.publication import CRASH_ENV, read_record

    server, repository, root = live
    settings = small_settings(root / "builds", quantize={"enabled": False})
    serving = versions(repository / "textclf_text")[-1]
    load = TextLoad(server.http_url, 50.0).start()
    time.sleep(2.0)
    package = _distinguishable_package(repository, serving, tmp_path)
    published = publish_package(package, repository)
    roll_out(server.http_url, package, repository, published.version, settings, tmp_path / "rollout")
    # the next one is killed (SIGKILL) after Triton loaded the new tokenizer and labels, before the classifier
    package = _distinguishable_package(repository, published.version, tmp_path)
    result = subprocess.run([sys.executable, "-m", "builders", "publish", "--package", str(package.root),
                             "--repository", str(repository), "--triton-url", server.http_url, "--skip-plan-check"],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
                            env={**os.environ, CRASH_ENV: "Triton loaded textclf_labels"})
    assert result.returncode == -9, result.stderr[-2000:]
    killed_at = time.monotonic()
    time.sleep(1.0)
    # the live server is now behind the repository; one more version is published without loading it, then rolled
    # out: the version the running ensemble needs is no longer among the two its members keep loaded
    package = _distinguishable_package(repository, published.version, tmp_path / "behind")
    behind = publish_package(package, repository)
    assert behind.version == published.version + 2
    roll_out(server.http_url, package, repository, behind.version, settings, tmp_path / "rollout-behind")
    # and a rollback to the first version, loaded live, as a user runs it
    result = subprocess.run([sys.executable, "-m", "builders", "rollback", "--repository", str(repository), "--model",
                             "textclf", "--version", str(serving), "--triton-url", server.http_url, "--keep", "10",
                             "--work-dir", str(tmp_path / "work")],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rolled_back = behind.version + 1
    load.join()
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    reported = sorted({v for v, _, _ in load.answers})
    assert reported == sorted([str(serving), str(published.version), str(behind.version), str(rolled_back)]), reported
    expected = {v: _computed_by(repository, v, TextLoad.TEXT) for v in reported}
    wrong = [(v, label, probabilities) for v, label, probabilities in load.answers
             if label != expected[v][1] or not np.allclose(probabilities, expected[v][0], atol=1e-4)]
    print(f"{len(load.answers)} answers, per reported version "
          f"{ {v: sum(a[0] == v for a in load.answers) for v in reported} }, {len(wrong)} computed by another version")
    assert not wrong, (f"{len(wrong)} of {len(load.answers)} answers were not computed by the version they report, "
                       f"e.g. {wrong[:2]}; expected {expected}")
    assert expected[str(serving)][1] != expected[str(published.version)][1] or not np.allclose(
        expected[str(serving)][0], expected[str(published.version)][0], atol=1e-3), "versions must be distinguishable"
    # after the kill the live server still served the family it had, whole (answers reported published.version,
    # computed by it, as checked above), until the next rollout switched it as a whole
    assert killed_at < time.monotonic()
    assert _served_versions(server.http_url, "textclf_text") == [str(rolled_back)]
    for member in ("textclf_tokenizer", "textclf_labels", "textclf"):  # the running ensemble's and the previous one
        assert sorted(_served_versions(server.http_url, member), key=int) == [str(behind.version),
                                                                             str(rolled_back)], member
    assert read_record(repository, "textclf")["version"] == rolled_back
    assert expected[str(rolled_back)][1] == expected[str(serving)][1], "the rollback serves the first version again"
