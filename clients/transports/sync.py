"""Blocking transports over ``tritonclient.http`` and ``tritonclient.grpc``, each call bounded by a deadline.

* gRPC: one channel per client object, shared by all threads (gRPC channels are thread-safe); the deadline travels
  with the call (``client_timeout``), so the server gives up too.
* HTTP: tritonclient's HTTP client (geventhttpclient) must not be shared between threads and has only
  per-socket-operation timeouts. Each thread therefore gets its own kept-alive connection pool, and a whole call is
  bounded with ``gevent.Timeout``. A call cut off by its deadline leaves its socket mid-response, so that thread's
  pool is closed and rebuilt on the next call instead of reusing the socket.
* Calls to Triton's restricted APIs (repository index, shared-memory registration) carry the admin token
  (:meth:`clients.settings.ConnectionSettings.resolved_admin_token`) in the protocol's header.
"""
from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import gevent
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from clients.settings import ConnectionSettings, RetryPolicy
from clients.transports.adapters import GrpcAdapter, HttpAdapter, ShmBinding, grpc_channel_args, read_outputs


class SyncTransport(ABC):
    """Operations every blocking transport offers; ``deadline`` is in seconds."""

    adapter: HttpAdapter

    def __init__(self, url: str, connection: ConnectionSettings, policy: RetryPolicy):
        self.url = url
        self.connection = connection
        self.policy = policy

    @property
    def _admin(self) -> dict:
        """The admin-token header for restricted APIs (inference never carries it), resolved per call: a local
        server restarted on the same port has a new per-start token, and a cached old one would be refused."""
        return self.adapter.admin_kwargs(self.connection.resolved_admin_token(self.url))

    @property
    def protocol(self) -> str:
        return self.adapter.protocol

    @abstractmethod
    def _client(self):
        """The tritonclient client this call runs on."""

    def _call(self, deadline: float, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._client()
        return getattr(client, method)(*args, **kwargs, **self.adapter.deadline_kwargs(deadline))

    def server_live(self, deadline: float) -> bool:
        return bool(self._call(deadline, "is_server_live"))

    def server_ready(self, deadline: float) -> bool:
        return bool(self._call(deadline, "is_server_ready"))

    def model_ready(self, model: str, version: str, deadline: float) -> bool:
        return bool(self._call(deadline, "is_model_ready", model, version))

    def server_version(self, deadline: float) -> str:
        return self.adapter.server_version(self._call(deadline, "get_server_metadata"))

    def model_metadata(self, model: str, version: str, deadline: float):
        return self.adapter.metadata(self._call(deadline, "get_model_metadata", model, version))

    def model_config(self, model: str, version: str, deadline: float):
        return self.adapter.config(self._call(deadline, "get_model_config", model, version))

    def repository_index(self, deadline: float) -> list[dict[str, str]]:
        return self.adapter.index(self._call(deadline, "get_model_repository_index", **self._admin))

    def infer(self, model: str, version: str, arrays: dict[str, np.ndarray], outputs: list[str],
              binding: ShmBinding | None, deadline: float, server_timeout_us: int | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
        infer_inputs, requested = self.adapter.request(arrays, outputs, binding)
        extra = {"timeout": server_timeout_us} if server_timeout_us else {}
        # the attempt's deadline travels to the server too: the CPU runtimes drop requests that reach them after it
        # (Triton 2.51 cannot bound their queues; see builders/runtime/onnx_model.py)
        extra["parameters"] = {"deadline_unix_ms": int((time.time() + deadline) * 1000)}
        result = self._infer_call(deadline, model, infer_inputs, model_version=version, outputs=requested, **extra)
        return read_outputs(self.adapter, result, outputs, binding)

    def _infer_call(self, deadline: float, model: str, inputs: list, **kwargs: Any) -> Any:
        return self._call(deadline, "infer", model, inputs, **kwargs)

    def register_system_shm(self, name: str, key: str, byte_size: int, deadline: float) -> None:
        self._call(deadline, "register_system_shared_memory", name, key, byte_size, **self._admin)

    def unregister_system_shm(self, name: str, deadline: float) -> None:
        self._call(deadline, "unregister_system_shared_memory", name, **self._admin)

    def register_cuda_shm(self, name: str, raw_handle: bytes, device_id: int, byte_size: int, deadline: float) -> None:
        self._call(deadline, "register_cuda_shared_memory", name, raw_handle, device_id, byte_size,
                   **self._admin)

    def unregister_cuda_shm(self, name: str, deadline: float) -> None:
        self._call(deadline, "unregister_cuda_shared_memory", name, **self._admin)

    @abstractmethod
    def close(self) -> None:
        """Close every connection this transport opened."""


class SyncGrpcTransport(SyncTransport):
    adapter = GrpcAdapter()

    def __init__(self, url: str, connection: ConnectionSettings, policy: RetryPolicy):
        super().__init__(url, connection, policy)
        self._grpc = grpcclient.InferenceServerClient(url, channel_args=grpc_channel_args(connection))

    def _client(self):
        return self._grpc

    def _infer_call(self, deadline: float, model: str, inputs: list, **kwargs: Any) -> Any:
        """The caller waits ``deadline``; the call itself is not cancelled then but left to the server, which answers
        a late request at once (see :data:`clients.transports.adapters.GRPC_INFER_GRACE_S`)."""
        done = threading.Event()
        outcome: list = []

        def callback(result, error) -> None:
            outcome.append((result, error))
            done.set()

        self._grpc.async_infer(model, inputs, callback, **kwargs, **self.adapter.infer_deadline_kwargs(deadline))
        if not done.wait(deadline):
            raise InferenceServerException(msg=f"Deadline Exceeded (no answer within {deadline:.3g} s)",
                                           status="StatusCode.DEADLINE_EXCEEDED")
        result, error = outcome[0]
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        self._grpc.close()


class SyncHttpTransport(SyncTransport):
    adapter = HttpAdapter()

    def __init__(self, url: str, connection: ConnectionSettings, policy: RetryPolicy):
        super().__init__(url, connection, policy)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            # socket timeouts only back up the per-call deadline below
            client = httpclient.InferenceServerClient(
                self.url, concurrency=self.connection.http_pool_size,
                connection_timeout=self.policy.timeout_s, network_timeout=self.policy.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _discard(self, client) -> None:
        if getattr(self._local, "client", None) is client:
            self._local.client = None
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        with contextlib.suppress(Exception):
            client.close()

    def _call(self, deadline: float, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._client()
        try:
            with gevent.Timeout(deadline, TimeoutError(f"no answer within {deadline:.3g} s")):
                return getattr(client, method)(*args, **kwargs)
        except InferenceServerException:
            raise  # the server answered: the connection is clean and stays in the pool
        except BaseException:
            self._discard(client)  # cut off mid-request or broken: never reuse these sockets
            raise

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        self._local = threading.local()


def open_sync_transport(protocol: str, url: str, connection: ConnectionSettings, policy: RetryPolicy) -> SyncTransport:
    return (SyncGrpcTransport if protocol == "grpc" else SyncHttpTransport)(url, connection, policy)
