"""An ``s3://`` model repository: moto's real S3 server on loopback, the real Triton reading ``s3://host:port/...``.

What is guaranteed and checked: a published version appears whole or not at all (checked after *every* object written
during a publication, from a second client, not by timing), a failed upload leaves the serving version and its
configurations byte for byte as they were, the launcher and the builders accept the URL, and a bad URL, an unreachable
server or a missing bucket is one line naming the setting.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders.object_store import DEFAULT_CONFIG, ObjectRepository, parse, pin, pinned_versions, publish_package
from builders.repository import Package
from common.errors import UserError
from common.net import free_port
from deploy.local_s3 import aws_credentials, create_bucket, moto_server
from deploy.probe_model import make_package

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("boto3", reason="boto3 is not installed (a project dependency: reinstall the environment)")
if not (Path(sys.executable).parent / "moto_server").is_file():
    pytest.skip("moto's server is not installed (pip install 'moto[server]')", allow_module_level=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with aws_credentials(), moto_server(log) as endpoint:
        yield endpoint


@pytest.fixture()
def bucket_url(s3, request):
    name = f"models-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    create_bucket(s3, name)
    return f"s3://{s3}/{name}/repo"


def snapshot(repo: ObjectRepository) -> dict[str, bytes]:
    out = {}
    for page in repo.s3.get_paginator("list_objects_v2").paginate(Bucket=repo.location.bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = repo.s3.get_object(Bucket=repo.location.bucket, Key=obj["Key"])["Body"].read()
    return out


def complete_as_pinned(repo: ObjectRepository, expected_files: set[str]) -> dict[str, list[int]]:
    """Every model's pinned versions, asserting each holds every file a version must hold."""
    pinned = {}
    for model in ("idle", "answer"):
        text = repo.read_text(repo.location.key(model, DEFAULT_CONFIG))
        if text is None:
            continue  # not published yet: Triton does not see the model at all
        pinned[model] = pinned_versions(text)
        assert pinned[model], f"{model}'s configuration pins no version"
        for number in pinned[model]:
            prefix = repo.location.key(model, str(number)) + "/"
            keys = {k[len(prefix):] for k in snapshot(repo) if k.startswith(prefix)}
            assert expected_files <= keys, f"{model} version {number} is partial: {sorted(keys)}"
    return pinned


class Recorder:
    """The real boto3 client, checking the repository from a second client after each object written (or failing
    the ``fail_at``-th write, as a lost connection would)."""

    def __init__(self, real, after_each_put=None, fail_at: int | None = None):
        self._real, self._after, self._fail_at, self.puts = real, after_each_put, fail_at, 0

    def put_object(self, **kwargs):
        self.puts += 1
        if self._fail_at is not None and self.puts == self._fail_at:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://lost")
        result = self._real.put_object(**kwargs)
        if self._after:
            self._after()
        return result

    def __getattr__(self, name):
        return getattr(self._real, name)


VERSION_FILES = {"model.py", "model_config/config.pbtxt"}


@pytest.mark.slow
def test_every_object_written_leaves_only_whole_versions_visible(bucket_url, tmp_path):
    observer = ObjectRepository(bucket_url)
    seen = []
    writer = ObjectRepository(bucket_url)
    writer.s3 = Recorder(writer.s3, after_each_put=lambda: seen.append(complete_as_pinned(observer, VERSION_FILES)))
    publish_package(Package.read(make_package(tmp_path / "p1", 1.0)), bucket_url, writer)
    publish_package(Package.read(make_package(tmp_path / "p2", 2.0)), bucket_url, writer)
    assert writer.s3.puts == len(seen) >= 8
    states = [state for i, state in enumerate(seen) if i == 0 or state != seen[i - 1]]
    # no model is visible until its configuration is written (idle first, then answer); version 1 stays pinned while
    # version 2 uploads, then each configuration switches in one write: nothing else is ever visible
    assert states == [{}, {"idle": [1]}, {"idle": [1], "answer": [1]}, {"idle": [2], "answer": [1]},
                      {"idle": [2], "answer": [2]}]
    assert seen.count({"idle": [1], "answer": [1]}) >= 3     # the whole upload of version 2 happened in that state
    assert observer.serving_version("answer") == 2 and observer.version_folders("answer") == [1, 2]


@pytest.mark.slow
def test_a_failed_upload_leaves_the_serving_version_byte_for_byte(bucket_url, tmp_path):
    repo = ObjectRepository(bucket_url)
    publish_package(Package.read(make_package(tmp_path / "p1", 1.0)), bucket_url, repo)
    before = snapshot(repo)
    broken = ObjectRepository(bucket_url)
    broken.s3 = Recorder(broken.s3, fail_at=3)            # the connection drops in the middle of version 2's upload
    with pytest.raises(UserError, match=r"cannot reach the object store .* \(check the host:port in --repository\)"):
        publish_package(Package.read(make_package(tmp_path / "p2", 2.0)), bucket_url, broken)
    assert snapshot(repo) == before


def test_urls_and_unreachable_or_missing_storage_are_one_line_naming_the_setting(s3, tmp_path):
    assert parse("s3://127.0.0.1:9000/models/repo/x").prefix == "repo/x"
    assert parse("s3://models").endpoint is None
    with pytest.raises(UserError, match=r"is not an S3 URL; expected s3://\[host:port/\]bucket/prefix"):
        parse("s3://127.0.0.1:9000")
    package = Package.read(make_package(tmp_path / "p", 1.0))
    with aws_credentials():
        with pytest.raises(UserError, match=r"bucket 'no-such-bucket' does not exist"):
            publish_package(package, f"s3://{s3}/no-such-bucket/repo")
        dead = f"s3://127.0.0.1:{free_port()}/models/repo"
        proc = subprocess.run([sys.executable, "-m", "builders", "publish", "--package", str(package.root),
                               "--repository", dead], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: repository s3://127.0.0.1:")
    assert "cannot reach the object store" in proc.stderr


def test_pin_keeps_the_newest_versions_a_latest_policy_asks_for():
    latest2 = 'name: "m"\nbackend: "python"\nversion_policy { latest { num_versions: 2 } }\n'
    assert pinned_versions(pin(latest2, 5, pin(latest2, 4, None))) == [4, 5]
    assert pinned_versions(pin('name: "m"\nbackend: "python"\n', 3, None)) == [3]
    ensemble = 'name: "e"\nplatform: "ensemble"\nversion_policy { specific { versions: [7] } }\n'
    assert pinned_versions(pin(ensemble, 7, None)) == [7]


@pytest.mark.slow
def test_triton_serves_from_s3_and_a_publish_rolls_the_new_version_out_live(bucket_url, tmp_path):
    import tritonclient.http as http

    from clients.serve import ServerConfig, TritonServer

    publish_package(Package.read(make_package(tmp_path / "p1", 1.0)), bucket_url)
    config = ServerConfig(repository=bucket_url, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), model_control="explicit", log_file=tmp_path / "triton.log")
    with TritonServer(config) as server:
        assert sorted(server.models) == ["answer", "idle"]
        client = http.InferenceServerClient(server.http_url)

        def answer() -> float:
            x = http.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1), np.float32))
            return float(client.infer("answer", [x]).as_numpy("y")[0, 0])

        assert answer() == 1.0
        proc = subprocess.run([sys.executable, "-m", "builders", "publish", "--package",
                               str(make_package(tmp_path / "p2", 2.0)), "--repository", bucket_url,
                               "--triton-url", server.http_url], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**__import__("os").environ, "TRITON_ADMIN_TOKEN": server.admin_token})
        assert proc.returncode == 0, proc.stderr
        assert f"Triton at {server.http_url} now serves answer version 2" in proc.stdout
        assert answer() == 2.0
        client.close()


def test_the_launcher_refuses_an_empty_or_unreachable_s3_repository(s3, tmp_path):
    from clients.serve import ServerConfig, TritonServer

    with aws_credentials():
        create_bucket(s3, "empty-bucket")
        empty = TritonServer(ServerConfig(repository=f"s3://{s3}/empty-bucket/repo"))
        with pytest.raises(UserError, match=r"holds no model with a config.pbtxt"):
            empty.preflight()
        dead = TritonServer(ServerConfig(repository=f"s3://127.0.0.1:{free_port()}/models/repo"))
        with pytest.raises(UserError, match="cannot reach the object store"):
            dead.preflight()


@pytest.mark.slow
def test_a_version_triton_cannot_load_is_taken_back_and_the_previous_one_keeps_serving(bucket_url, tmp_path):
    import os

    import tritonclient.http as http

    from clients.serve import ServerConfig, TritonServer

    publish_package(Package.read(make_package(tmp_path / "p1", 1.0)), bucket_url)
    repo = ObjectRepository(bucket_url)
    before = snapshot(repo)
    broken = make_package(tmp_path / "p2", 2.0)
    model_py = broken / "answer" / "version" / "model.py"
    model_py.write_text(model_py.read_text().replace("self.answer = ", "raise RuntimeError('broken weights'); "
                                                                      "self.answer = "))
    config = ServerConfig(repository=bucket_url, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), model_control="explicit", log_file=tmp_path / "triton.log")
    with TritonServer(config) as server:
        proc = subprocess.run([sys.executable, "-m", "builders", "publish", "--package", str(broken), "--repository",
                               bucket_url, "--triton-url", server.http_url], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "TRITON_ADMIN_TOKEN": server.admin_token})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "version 2 was removed from" in proc.stderr and "the previous version keeps serving" in proc.stderr
        client = http.InferenceServerClient(server.http_url)
        x = http.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.zeros((1, 1), np.float32))
        assert float(client.infer("answer", [x]).as_numpy("y")[0, 0]) == 1.0
        client.close()
    assert snapshot(repo) == before          # configs pin version 1 again, byte for byte; version 2 is gone


def test_credentials_that_may_read_but_not_write_are_one_line_and_change_nothing(tmp_path):
    import json

    import boto3

    with aws_credentials(), moto_server(tmp_path / "moto.log", enforce_auth_after=5) as endpoint:
        admin = {"endpoint_url": f"http://{endpoint}", "region_name": "us-east-1"}
        boto3.client("s3", **admin).create_bucket(Bucket="models")                                # 1
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")                                                         # 2
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({  # 3
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:Head*"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]                                # 4
        url = f"s3://{endpoint}/models/repo"
        reader = ObjectRepository(url, boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                                                    aws_secret_access_key=key["SecretAccessKey"], **admin))
        with pytest.raises(UserError, match=r"^repository s3://.*: the credentials in AWS_ACCESS_KEY_ID / "
                                            r"AWS_SECRET_ACCESS_KEY may not write .*\(AccessDenied\)$"):
            publish_package(Package.read(make_package(tmp_path / "p", 1.0)), url, reader)
        assert reader.models() == [] and reader.version_folders("answer") == []


def test_build_names_the_two_steps_for_an_s3_repository(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "builders", "build", "--run-dir", str(tmp_path), "--repository",
                           "s3://127.0.0.1:9/models/repo"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--no-publish, then `python -m builders publish --package BUILD_DIR/package --repository s3://" in proc.stderr
