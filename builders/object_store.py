"""Publish to a model repository in S3-compatible object storage, with the same guarantee as on disk: a version
appears whole or not at all, and a failed publication leaves the serving version untouched.

Triton reads ``s3://host:port/bucket/prefix`` itself (its own form of the URL; credentials from the ``AWS_*``
environment variables). Object storage has no rename, so the directory trick of :mod:`builders.repository` (stage,
then one ``rename``) does not exist there: a version folder becomes visible with its first uploaded object, and a
Triton starting in the middle of an upload would read a partial version under the ``latest`` policy. The one atomic
operation S3 has is replacing a single object. So:

1. every file of version N is uploaded under ``<model>/N/`` while the model's ``config.pbtxt`` (and ``configs/*.pbtxt``)
   still pins the previous version with ``version_policy { specific { versions: [M] } }``: Triton never looks at N;
2. then each configuration is replaced in one PUT by the package's configuration pinned to N.

A reader sees the configuration before or after that PUT, so it loads M or N, each complete. A failed upload deletes
what it wrote of N and never touches a configuration. "Serving version" on S3 is the pinned one (not the highest
folder, which may be a failed upload's leftovers). A brand-new model's first configuration is written last too, so
until then the model has no configuration and Triton does not load it at all.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

DEFAULT_CONFIG = "config.pbtxt"
_URL = re.compile(r"^s3://(?:(?P<endpoint>[A-Za-z0-9.-]+:\d+)/)?(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])"
                  r"(?:/(?P<prefix>[^?#]*))?$")


def is_s3(value) -> bool:
    return str(value).startswith("s3://")


def repository_arg(text: str):
    """argparse type of ``--repository``: an ``s3://`` URL stays a string (``Path`` would fold its ``//``)."""
    if is_s3(text):
        parse(text)  # a malformed URL is refused before any work starts
        return text
    return Path(text)


@dataclass(frozen=True)
class S3Location:
    url: str
    endpoint: str | None      # host:port of an S3-compatible server; None = AWS
    bucket: str
    prefix: str               # '' or 'a/b' (no trailing slash)

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


def parse(url: str) -> S3Location:
    match = _URL.match(url)
    if not match:
        raise UserError(f"repository {url!r} is not an S3 URL; expected s3://[host:port/]bucket/prefix (Triton's form, "
                        "e.g. s3://127.0.0.1:9000/models/repo)")
    return S3Location(url, match["endpoint"], match["bucket"], (match["prefix"] or "").strip("/"))


def client(location: S3Location):
    """A boto3 client for ``location``; credentials and region from the usual AWS environment variables."""
    import boto3
    from botocore.config import Config

    endpoint = f"http://{location.endpoint}" if location.endpoint else None
    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))


def _explain(exc: Exception, location: S3Location, action: str) -> UserError:
    """One line for what went wrong talking to the object store (the setting to check is named)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, EndpointConnectionError):
        return UserError(f"repository {location.url}: cannot reach the object store at "
                         f"{location.endpoint or 'AWS S3'} while trying to {action} (check the host:port in --repository)")
    if isinstance(exc, NoCredentialsError):
        return UserError(f"repository {location.url}: no credentials to {action}; set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in ("NoSuchBucket", "404"):
            return UserError(f"repository {location.url}: bucket {location.bucket!r} does not exist (create it, or fix "
                             "the bucket in --repository)")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return UserError(f"repository {location.url}: the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                             f"may not {action} ({code})")
        return UserError(f"repository {location.url}: {action} failed: {code}: {exc}")
    return UserError(f"repository {location.url}: {action} failed: {exc}")


class ObjectRepository:
    """A Triton model repository under ``s3://[host:port/]bucket/prefix``."""

    def __init__(self, url: str, s3=None):
        self.location = parse(url)
        self.s3 = s3 or client(self.location)

    # -- reading ----------------------------------------------------------------------------------------------------
    def _call(self, action: str, function, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(Bucket=self.location.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _explain(exc, self.location, action) from None

    def _prefixes(self, key: str) -> list[str]:
        """Immediate 'sub-folders' under ``key``."""
        paginator = self.s3.get_paginator("list_objects_v2")
        found = []
        prefix = f"{key}/" if key else ""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix, Delimiter="/"):
                found += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except (BotoCoreError, ClientError) as exc:
            raise _explain(exc, self.location, "list the repository") from None
        return found

    def _keys(self, key: str) -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=f"{key}/"):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def read_text(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise _explain(exc, self.location, f"read {key}") from None
        return body.decode("utf-8")

    def models(self) -> list[str]:
        """Model folders that have a configuration (a folder without one is not served yet)."""
        return sorted(m for m in self._prefixes(self.location.prefix)
                      if not m.startswith(".") and self.read_text(self.location.key(m, DEFAULT_CONFIG)) is not None)

    def version_folders(self, model: str) -> list[int]:
        return sorted(int(p) for p in self._prefixes(self.location.key(model)) if p.isdigit())

    def serving_version(self, model: str, config_name: str = DEFAULT_CONFIG) -> int | None:
        """The version the model's configuration pins (what every Triton reading this repository serves)."""
        text = self.read_text(self.location.key(model, config_name))
        return pinned_version(text) if text is not None else None

    def check_readable(self, config_name: str | None = None) -> list[str]:
        """The launcher's pre-flight check: reachable, bucket exists, holds models with a parseable configuration."""
        self._call("reach the bucket", self.s3.head_bucket)
        names = self.models()
        if not names:
            raise UserError(f"model repository {self.location.url} holds no model with a {DEFAULT_CONFIG} (expected "
                            "<model>/config.pbtxt and <model>/<version>/; publish one with `python -m builders publish "
                            f"--repository {self.location.url}`)")
        for name in names:
            relative = f"configs/{config_name}.pbtxt" if config_name else DEFAULT_CONFIG
            if self.read_text(self.location.key(name, relative)) is None:
                raise UserError(f"model '{name}': {self.location.url}/{name}/{relative} is missing (expected a Triton "
                                "model configuration)")
        return names

    # -- writing ----------------------------------------------------------------------------------------------------
    def _put(self, key: str, data: bytes) -> None:
        self._call(f"write {key}", self.s3.put_object, Key=key, Body=data)

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            if batch:
                self._call("delete objects", self.s3.delete_objects, Delete={"Objects": batch, "Quiet": True})

    def upload_tree(self, local: Path, key: str) -> list[str]:
        written = []
        try:
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                target = f"{key}/{path.relative_to(local).as_posix()}"
                self._put(target, path.read_bytes())
                written.append(target)
        except BaseException:
            self._delete(written)
            raise
        return written

    def remove_version(self, model: str, number: int) -> None:
        self._delete(self._keys(self.location.key(model, str(number))))


def pinned_versions(config_text: str) -> list[int]:
    """The versions a configuration pins (``specific { versions: [...] }``), ascending; [] for any other policy."""
    config = _parse_config(config_text)
    if config.version_policy.WhichOneof("policy_choice") == "specific":
        return sorted(int(v) for v in config.version_policy.specific.versions)
    return []


def pinned_version(config_text: str) -> int | None:
    """The newest pinned version: the one a request without a version gets."""
    found = pinned_versions(config_text)
    return found[-1] if found else None


def _parse_config(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def pin(config_text: str, number: int, previous_text: str | None = None) -> str:
    """The configuration to publish as version ``number``, its policy made explicit as ``specific``.

    ``latest { num_versions: k }`` becomes the newest k of (the versions the previous configuration pinned, number):
    the same versions Triton would serve from a directory holding only complete versions. A configuration that
    already pins versions (an ensemble naming its own version) is kept as it is."""
    from google.protobuf import text_format

    config = _parse_config(config_text)
    if config.version_policy.WhichOneof("policy_choice") == "specific":
        return text_format.MessageToString(config)
    keep = config.version_policy.latest.num_versions if config.version_policy.HasField("latest") else 1
    older = pinned_versions(previous_text) if previous_text else []
    chosen = sorted({*older, number})[-max(1, keep):]
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(chosen)
    return text_format.MessageToString(config)


def _publication_configs(package, member: str, number: int) -> dict[str, bytes]:
    """What the directory publish installs for this member and version (builders.repository decides: an ensemble
    names its members' exact versions), else the package's configuration files as they are."""
    from builders import repository

    decide = getattr(repository, "publication_configs", None)
    if decide is not None:
        return decide(package, member, number)
    return {rel: path.read_bytes() for rel, path in repository.config_files(package.model_dir(member)).items()}


@dataclass
class PublishedS3:
    version: int
    previous: dict[str, dict[str, str | None]]   # member -> config file -> previous text (None: there was none)


def publish_package(package, url: str, repo: ObjectRepository | None = None) -> PublishedS3:
    """Publish every member of ``package`` as version N+1 under ``url``: upload everything, then flip the configs."""
    from builders.repository import _stage_version

    repo = repo or ObjectRepository(url)
    loc = repo.location
    repo._call("reach the bucket", repo.s3.head_bucket)
    number = max((max(repo.version_folders(m), default=0) for m in package.members), default=0) + 1
    uploaded: list[str] = []
    previous: dict[str, dict[str, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="s3-publish.") as scratch:
        try:
            for member in package.members:       # 1. version N of every member: invisible, configs pin the old one
                staged = _stage_version(package, member, Path(scratch), number)
                uploaded += repo.upload_tree(staged, loc.key(member, str(number)))
        except BaseException:
            repo._delete(uploaded)
            raise
    for member in package.members:               # 2. one PUT per configuration: the switch
        configs = _publication_configs(package, member, number)
        previous[member] = {}
        for relative in sorted(configs, key=lambda r: r == DEFAULT_CONFIG):   # config.pbtxt last: it defines the model
            key = loc.key(member, relative)
            previous[member][relative] = old = repo.read_text(key)
            repo._put(key, pin(configs[relative].decode("utf-8"), number, old).encode())
    return PublishedS3(number, previous)


def restore(repo: ObjectRepository, published: PublishedS3) -> None:
    """Undo a publication whose rollout failed: the previous configurations back (one PUT each), version N removed."""
    loc = repo.location
    for member, configs in reversed(published.previous.items()):
        for relative, text in sorted(configs.items(), key=lambda item: item[0] != DEFAULT_CONFIG):
            key = loc.key(member, relative)
            if text is None:
                repo._delete([key])
            else:
                repo._put(key, text.encode())
        repo.remove_version(member, published.version)


def prune(repo: ObjectRepository, member: str, keep: int) -> list[int]:
    """Delete versions older than the newest ``keep``, never a pinned one."""
    text = repo.read_text(repo.location.key(member, DEFAULT_CONFIG))
    pinned = set(pinned_versions(text)) if text else set()
    found = repo.version_folders(member)
    old = [v for v in found[:-keep] if v not in pinned] if keep > 0 else []
    for number in old:
        repo.remove_version(member, number)
    return old


def publish_and_roll_out(package, args: argparse.Namespace, settings) -> int:
    """``python -m builders publish --repository s3://...``: publish, load it on each ``--triton-url``, then prune."""
    from builders.rollout import load_published, resync

    repo = ObjectRepository(str(args.repository))
    published = publish_package(package, str(args.repository), repo)
    print(f"published {package.primary} version {published.version} to {args.repository} "
          f"(members: {', '.join(package.members)})", flush=True)
    urls = [u for u in (getattr(args, "triton_url", None) or "").split(",") if u]
    for url in urls:
        try:
            load_published(url, package.members, package.primary, published.version, settings.publish.load_timeout_s)
        except UserError as exc:
            restore(repo, published)
            for other in urls:
                resync(other, package.members, settings.publish.load_timeout_s)
            raise UserError(f"{exc}; version {published.version} was removed from {args.repository} and the previous "
                            "version keeps serving") from None
        print(f"Triton at {url} now serves {package.primary} version {published.version}", flush=True)
    removed = sorted({n for m in package.members for n in prune(repo, m, settings.publish.keep_versions)})
    if removed:
        print(f"removed old version(s) {', '.join(map(str, removed))} (publish.keep_versions = "
              f"{settings.publish.keep_versions})", flush=True)
    return 0
