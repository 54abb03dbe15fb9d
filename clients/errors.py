"""What can go wrong when calling Triton, sorted by what the caller should do about it.

tritonclient reports failures four different ways (``InferenceServerException`` with an HTTP status or a gRPC code,
``OSError`` from geventhttpclient, aiohttp's exceptions, timeouts), and the retry decision must not depend on which
protocol happened to be in use. :func:`classify` maps every one of them onto a :class:`Failure`: a kind, whether a
retry can help, and a short reason for the retry counter. The exceptions raised to callers are
:class:`~common.errors.UserError` subclasses, so the command line prints their one-line message and exits non-zero.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass

from common.errors import UserError


class ClientError(UserError):
    """Base of every error the client library raises; the message names the URL or the model involved.

    ``attempts`` is how many requests the failing step sent (0 when the call failed before sending anything),
    ``retries`` how many retries the whole call made.
    """

    attempts: int = 0
    retries: int = 0


class InvalidRequest(ClientError):
    """The request cannot succeed as sent (bad input name, shape, datatype, batch size, empty). Never retried."""


class ModelNotFound(InvalidRequest):
    """The server does not know the model or version."""


class ServerUnavailable(ClientError):
    """The server could not be reached or kept refusing within the budget (the message names the URL)."""


class DeadlineExceeded(ClientError):
    """An attempt ran past its deadline, or the budget ran out while waiting."""


class ServerError(ClientError):
    """The server failed the request for a reason a retry will not fix (a model error, an internal error)."""


class RegionsLost(Exception):
    """Triton no longer knows this client's shared-memory regions (it restarted): register them again and retry."""


@dataclass(frozen=True)
class Failure:
    """One failed attempt, protocol-independent."""

    kind: str  # unavailable | overloaded | deadline | invalid | not_found | server
    retryable: bool
    reason: str  # label value for inference_client_retries_total: connection_refused, http_503, grpc_unavailable...
    detail: str  # the server's or the OS's own words


_RETRYABLE_HTTP = {"502": "http_502", "503": "http_503", "504": "http_504"}
_CONNECTION_ERRNOS = {
    errno.ECONNREFUSED: "connection_refused",
    errno.ECONNRESET: "connection_reset",
    errno.EPIPE: "connection_reset",
    errno.ECONNABORTED: "connection_reset",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "host_unreachable",
}
# Triton's own words for transient refusals: its queue policy turned the request away (UNAVAILABLE / 503), or the
# model is known but has no loaded version right now (while it loads, unloads, or the server shuts down: NOT_FOUND).
_TRANSIENT_MESSAGES = {"exceeds maximum queue size": ("overloaded", "queue_full"),
                       "request timeout expired": ("overloaded", "queue_timeout"),
                       "has no available versions": ("unavailable", "model_unavailable")}


def _classify_triton(status: str, message: str) -> Failure:
    lowered = message.lower()
    for needle, (kind, reason) in _TRANSIENT_MESSAGES.items():
        if needle in lowered:
            return Failure(kind, True, reason, message)
    if status in _RETRYABLE_HTTP:
        return Failure("unavailable", True, _RETRYABLE_HTTP[status], message)
    if status == "StatusCode.UNAVAILABLE":
        lowered = message.lower()
        reason = "connection_refused" if "connection refused" in lowered else "grpc_unavailable"
        return Failure("unavailable", True, reason, message)
    if status in ("StatusCode.DEADLINE_EXCEEDED", "408"):
        return Failure("deadline", False, "deadline", message)
    if status in ("404", "StatusCode.NOT_FOUND") or "is not found" in message:
        return Failure("not_found", False, "not_found", message)
    if status in ("400", "StatusCode.INVALID_ARGUMENT", "413", "StatusCode.OUT_OF_RANGE"):
        return Failure("invalid", False, "invalid", message)
    return Failure("server", False, "server_error", message or f"status {status}")


def classify(exc: BaseException) -> Failure:
    """Sort any exception from one attempt into a :class:`Failure`. Unknown exceptions are not retryable."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, RegionsLost):
        return Failure("unavailable", True, "shm_reregister", str(exc))
    if isinstance(exc, InferenceServerException):
        return _classify_triton(str(exc.status() or ""), str(exc.message() or ""))
    if isinstance(exc, (TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return Failure("deadline", False, "deadline", str(exc) or "timed out")
    if isinstance(exc, socket.gaierror):
        return Failure("unavailable", False, "dns", f"cannot resolve the host name ({exc.strerror or exc})")
    aiohttp_failure = _classify_aiohttp(exc)
    if aiohttp_failure is not None:
        return aiohttp_failure
    if isinstance(exc, OSError):
        reason = _CONNECTION_ERRNOS.get(exc.errno or 0)
        if reason is None and isinstance(exc, (ConnectionError,)):
            reason = "connection_reset"
        if reason:
            return Failure("unavailable", True, reason, exc.strerror or str(exc))
        return Failure("server", False, "os_error", str(exc))
    if type(exc).__name__ in ("HTTPConnectionClosed", "HTTPParseError"):  # geventhttpclient: the server hung up
        return Failure("unavailable", True, "connection_reset", str(exc) or "connection closed by the server")
    return Failure("server", False, "client_error", f"{type(exc).__name__}: {exc}")


def _classify_aiohttp(exc: BaseException) -> Failure | None:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp ships with tritonclient[http]
        return None
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return Failure("unavailable", False, "dns", f"cannot resolve the host name ({os_error.strerror or os_error})")
        reason = _CONNECTION_ERRNOS.get(getattr(os_error, "errno", None) or 0, "connection_refused")
        return Failure("unavailable", True, reason, str(os_error) or str(exc))
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return Failure("unavailable", True, "connection_reset", str(exc) or "server disconnected")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return Failure("deadline", False, "deadline", str(exc) or "timed out")
    return None
