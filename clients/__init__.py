"""Talking to Triton: the serving launcher (``clients.serve``), the client library and the command line.

The library, on top of tritonclient, one interface over HTTP and gRPC::

    from clients import TritonClient, AsyncTritonClient, ClientConfig

``python -m clients --help`` lists the commands. Names are imported on first use, so ``python -m clients serve``
does not pay for loading the client stack.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TritonClient": "clients.client",
    "AsyncTritonClient": "clients.aio",
    "ClientConfig": "clients.settings",
    "RetryPolicy": "clients.settings",
    "ConnectionSettings": "clients.settings",
    "load_client_config": "clients.settings",
    "InferenceResult": "clients.results",
    "ModelInfo": "clients.model_info",
    "ClientError": "clients.errors",
    "InvalidRequest": "clients.errors",
    "ModelNotFound": "clients.errors",
    "ServerUnavailable": "clients.errors",
    "DeadlineExceeded": "clients.errors",
    "ServerError": "clients.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
