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
"""
from __future__ import annotations

import os
import time
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


def load_published(url: str, members: Sequence[str], primary: str, version: int, timeout_s: float) -> None:
    """Load every member in order and check that ``primary`` now serves ``version``; a :class:`UserError` otherwise."""
    from tritonclient.utils import InferenceServerException

    client = _client(url, timeout_s)
    try:
        try:
            if not client.is_server_live(headers=_headers(url)):
                raise UserError(f"Triton at {url} is not live; nothing was loaded")
        except InferenceServerException as exc:
            raise UserError(f"cannot reach Triton at {url}: {exc.message()}") from None
        for member in members:
            try:
                client.load_model(member, headers=_headers(url))
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
