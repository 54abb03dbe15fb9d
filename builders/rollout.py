"""Live rollout: ask a running Triton (explicit model-control mode) to load what was just published.

Triton loads the new version beside the serving one and switches traffic only when it is ready, so requests keep
succeeding. If it cannot load the new version, the old one keeps serving; :func:`load_published` then reports Triton's
reason and the caller retracts the version from disk, so a restart does not pick up a version that cannot load.
The model-control API is restricted: the token in ``$TRITON_ADMIN_TOKEN``, else the one ``clients serve`` wrote for the
server's port (:mod:`clients.admin_token`), is sent in ``triton-admin-token``.

Members are loaded in the package's order, composing models first and the ensemble last. Each load of a composing model
makes Triton reload the ensemble with the steps it already has, which name the exact member versions of the version
being served (see :mod:`builders.repository`), so until the ensemble itself is loaded every answer still comes from
the old family as a whole, and then from the new one. A ``kill -9`` of the publisher between two loads leaves the
server on the old family, consistent, until the next rollout or restart.

The composed models keep their two newest versions loaded, which covers the ensemble that serves while the next one
loads. When the live server is further behind (a rollout was killed, or versions were published without
``--triton-url``), the version its ensemble runs is not among those two: such a member is first loaded with its new
configuration plus a version policy that also keeps the running version (Triton's load API with a configuration
override), the ensemble is loaded, and then the member again from disk, which lets the version nothing needs go.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from common.errors import UserError
from builders.publication import crash_point
from clients.serve import ADMIN_HEADER, ADMIN_TOKEN_ENV
from clients.triton_log import first_line


def _headers(url: str) -> dict[str, str]:
    """``$TRITON_ADMIN_TOKEN``, else the token a local ``clients serve`` made for this start (clients.admin_token)."""
    from clients.admin_token import read_token_for

    token = os.environ.get(ADMIN_TOKEN_ENV) or read_token_for(url)
    return {ADMIN_HEADER: token} if token else {}


def _client(url: str, timeout_s: float):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)


def _live_pins(client, url: str, members: Sequence[str]) -> dict[str, int]:
    """Member versions the loaded ensembles among ``members`` run now (empty when none is loaded)."""
    pins: dict[str, int] = {}
    for member in members:
        try:
            if not client.is_model_ready(member, headers=_headers(url)):
                continue
            config = client.get_model_config(member, headers=_headers(url))
        except Exception:
            continue
        for step in (config.get("ensemble_scheduling") or {}).get("step", []):
            pins[step["model_name"]] = int(step.get("model_version", -1))
    return pins


def _matches(config, live: dict) -> bool:
    """Whether a configuration file is the one Triton loaded (which target: python, ONNX Runtime, TensorRT, INT8)."""
    params = {k: (v or {}).get("string_value", "") for k, v in (live.get("parameters") or {}).items()}
    onnx_file = config.parameters["onnx_file"].string_value if "onnx_file" in config.parameters else ""
    return ((config.backend, config.platform, onnx_file)
            == (live.get("backend", ""), live.get("platform", ""), params.get("onnx_file", "")))


def _keeping_override(client, url: str, model_dir: Path, running: int, version: int) -> tuple[str, str] | None:
    """The member's new configuration (the file Triton uses) as JSON, once serving ``running`` and ``version`` both and
    once as on disk; None when the running version is kept anyway or the file cannot be told. (Both go through the
    load API: after an override Triton does not read an unchanged model folder again.)"""
    from google.protobuf import json_format

    from builders.repository import config_files, versions
    from common.triton_config import load_config_file

    kept = versions(model_dir)
    if running <= 0 or running not in kept or running in kept[-2:]:
        return None
    try:
        live = client.get_model_config(model_dir.name, headers=_headers(url))
    except Exception:
        return None
    candidates = [load_config_file(path) for path in config_files(model_dir).values()]
    chosen = [c for c in candidates if _matches(c, live)]
    if len(chosen) != 1:
        return None
    config = chosen[0]
    as_on_disk = json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))
    config.version_policy.specific.versions[:] = sorted({running, version})
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)), as_on_disk


def load_published(url: str, members: Sequence[str], primary: str, version: int, timeout_s: float,
                   repository: str | Path | None = None) -> None:
    """Load every member in order and check that ``primary`` now serves ``version``; a :class:`UserError` otherwise.

    With ``repository`` (a local folder) a composed model whose running version its new version policy would drop is
    loaded keeping it until the ensemble has switched (see the module docstring)."""
    from tritonclient.utils import InferenceServerException

    client = _client(url, timeout_s)
    try:
        try:
            if not client.is_server_live(headers=_headers(url)):
                raise UserError(f"Triton at {url} is not live; nothing was loaded")
        except InferenceServerException as exc:
            raise UserError(f"cannot reach Triton at {url}: {exc.message()}") from None
        pins = _live_pins(client, url, members) if repository is not None else {}
        overrides = {m: o for m, p in pins.items() if m in members
                     and (o := _keeping_override(client, url, Path(repository) / m, p, version)) is not None}
        # members in order (composed models first, the ensemble last), then the overridden ones again from disk
        for member, config in ([(m, overrides[m][0] if m in overrides else None) for m in members]
                               + [(m, configs[1]) for m, configs in overrides.items()]):
            try:
                client.load_model(member, headers=_headers(url), config=config)
            except InferenceServerException as exc:
                reason = first_line(exc.message() or str(exc))  # Triton appends a Python traceback
                raise UserError(f"Triton at {url} could not load model {member!r} version {version}: {reason}") from None
            except Exception as exc:  # connection dropped, timeout
                raise UserError(f"loading model {member!r} on Triton at {url} failed: {exc}") from None
            crash_point(f"Triton loaded {member}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if client.is_model_ready(primary, str(version), headers=_headers(url)):
                return
            time.sleep(0.2)
        raise UserError(f"Triton at {url} did not report {primary!r} version {version} ready within {timeout_s:.0f} s")
    finally:
        client.close()


def resync(url: str, members: Sequence[str], timeout_s: float) -> None:
    """After a retraction: reload so Triton's view matches the repository again (best effort)."""
    client = _client(url, timeout_s)
    try:
        for member in members:
            try:
                client.load_model(member, headers=_headers(url))
            except Exception:
                pass
    finally:
        client.close()
