"""What differs between HTTP and gRPC, as pure functions: building requests and reading answers.

* HTTP sends tensors as binary data after the JSON header (``binary_data=True`` on inputs and outputs), never as
  JSON numbers: for a [64, 128] FP32 tensor that is 32 KiB instead of ~150 KiB of text and no float parsing.
* gRPC carries the deadline to the server (``client_timeout``); for HTTP the sync transport enforces it locally.
* HTTP answers metadata and configuration as JSON, gRPC as protobuf: both are turned into the protobuf types
  (see :mod:`clients.model_info`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from clients.model_info import config_from_json, metadata_from_json
from clients.serve import ADMIN_HEADER

# Triton checks a restricted gRPC call for the metadata key "triton-grpc-protocol-<key>" (the prefix is Triton's
# kRestrictedProtocolHeaderTemplate), where <key> is what --grpc-restricted-protocol names; over HTTP the key itself.
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"


@dataclass
class ShmBinding:
    """Tensors that travel through shared memory regions instead of the request: name -> (region, byte size)."""

    inputs: dict[str, tuple[str, int]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, int]] = field(default_factory=dict)


def _datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype.kind in ("U", "S", "O") else np_to_triton_dtype(array.dtype)


def _bytes_ready(array: np.ndarray) -> np.ndarray:
    """Unicode arrays are sent as UTF-8 bytes objects (tritonclient serializes object arrays of bytes/str)."""
    if array.dtype.kind == "U":
        return np.vectorize(lambda s: s.encode("utf-8"), otypes=[np.object_])(array)
    return array


class HttpAdapter:
    protocol = "http"

    @staticmethod
    def module():
        return httpclient

    def deadline_kwargs(self, deadline: float) -> dict[str, Any]:
        return {}

    def infer_deadline_kwargs(self, deadline: float) -> dict[str, Any]:
        return self.deadline_kwargs(deadline)

    @staticmethod
    def admin_header() -> str:
        """The header that carries the admin token on calls to Triton's restricted APIs."""
        return ADMIN_HEADER

    def admin_kwargs(self, token: str | None) -> dict[str, Any]:
        """``headers=`` for a restricted call (model repository, shared memory); nothing without a token."""
        return {"headers": {self.admin_header(): token}} if token else {}

    def request(self, arrays: dict[str, np.ndarray], outputs: list[str], binding: ShmBinding | None):
        module = self.module()
        binding = binding or ShmBinding()
        infer_inputs = []
        for name, array in arrays.items():
            item = module.InferInput(name, list(array.shape), _datatype(array))
            if name in binding.inputs:
                region, size = binding.inputs[name]
                item.set_shared_memory(region, size)
            else:
                item.set_data_from_numpy(_bytes_ready(array), binary_data=True)
            infer_inputs.append(item)
        requested = []
        for name in outputs:
            item = module.InferRequestedOutput(name, binary_data=True)
            if name in binding.outputs:
                region, size = binding.outputs[name]
                item.set_shared_memory(region, size)
            requested.append(item)
        return infer_inputs, requested

    @staticmethod
    def output_shape(result, name: str) -> list[int]:
        output = result.get_output(name)
        return [int(d) for d in output["shape"]] if output else []

    @staticmethod
    def metadata(response):
        return metadata_from_json(response)

    @staticmethod
    def config(response):
        return config_from_json(response)

    @staticmethod
    def index(response) -> list[dict[str, str]]:
        return [{"name": m.get("name", ""), "version": str(m.get("version", "")), "state": m.get("state", ""),
                 "reason": m.get("reason", "")} for m in response]

    @staticmethod
    def server_version(response) -> str:
        return f"{response.get('name', 'triton')} {response.get('version', '?')}"


# How long after the caller's deadline gRPC's own deadline of an inference fires. The caller's deadline is kept
# locally and travels to the server (``deadline_unix_ms``), whose CPU runtimes answer a late request UNAVAILABLE at
# once; gRPC's deadline is only the backstop for a server that does not answer at all. Triton 2.51's gRPC frontend
# crashes (SIGSEGV in ModelInferHandler) when cancellations race completed requests at a high rate, which is what
# gRPC deadlines expiring server-side under overload produce (seen here at c=256 with a 100 ms deadline:
# triton-inference-server/server#7368, fixed by #7840 in later releases), so an abandoned call is left to finish.
GRPC_INFER_GRACE_S = 2.0


class GrpcAdapter(HttpAdapter):
    protocol = "grpc"

    @staticmethod
    def module():
        return grpcclient

    def deadline_kwargs(self, deadline: float) -> dict[str, Any]:
        return {"client_timeout": deadline}

    def infer_deadline_kwargs(self, deadline: float) -> dict[str, Any]:
        """gRPC's deadline for an inference whose caller waits ``deadline`` (see :data:`GRPC_INFER_GRACE_S`)."""
        return {"client_timeout": deadline + GRPC_INFER_GRACE_S}

    @staticmethod
    def admin_header() -> str:
        return GRPC_RESTRICTED_PREFIX + ADMIN_HEADER

    def request(self, arrays: dict[str, np.ndarray], outputs: list[str], binding: ShmBinding | None):
        module = self.module()
        binding = binding or ShmBinding()
        infer_inputs = []
        for name, array in arrays.items():
            item = module.InferInput(name, list(array.shape), _datatype(array))
            if name in binding.inputs:
                region, size = binding.inputs[name]
                item.set_shared_memory(region, size)
            else:
                item.set_data_from_numpy(_bytes_ready(array))
            infer_inputs.append(item)
        requested = []
        for name in outputs:
            item = module.InferRequestedOutput(name)
            if name in binding.outputs:
                region, size = binding.outputs[name]
                item.set_shared_memory(region, size)
            requested.append(item)
        return infer_inputs, requested

    @staticmethod
    def output_shape(result, name: str) -> list[int]:
        output = result.get_output(name)
        return [int(d) for d in output.shape] if output is not None else []

    @staticmethod
    def metadata(response):
        return response

    @staticmethod
    def config(response):
        return response.config

    @staticmethod
    def index(response) -> list[dict[str, str]]:
        return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in response.models]

    @staticmethod
    def server_version(response) -> str:
        return f"{response.name or 'triton'} {response.version or '?'}"


def read_outputs(adapter: HttpAdapter, result, outputs: list[str], binding: ShmBinding | None
                 ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """In-band outputs as arrays, and the shapes of those the server wrote into shared memory."""
    binding = binding or ShmBinding()
    arrays, shm_shapes = {}, {}
    for name in outputs:
        if name in binding.outputs:
            shm_shapes[name] = adapter.output_shape(result, name)
        else:
            value = result.as_numpy(name)
            if value is not None:
                arrays[name] = value
    return arrays, shm_shapes


def grpc_channel_args(connection) -> list[tuple[str, Any]]:
    """gRPC channel options from :class:`clients.settings.ConnectionSettings` (replacing tritonclient's defaults).

    Idle channels are not pinged: Triton's default server policy answers pings without calls with GOAWAY
    (``too_many_pings``). Reconnection backoff is capped so a restarted server is found within about a second.
    """
    return [
        ("grpc.max_send_message_length", connection.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", connection.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", connection.grpc_keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", connection.grpc_keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", min(100, connection.grpc_reconnect_backoff_max_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, connection.grpc_reconnect_backoff_max_ms)),
        ("grpc.max_reconnect_backoff_ms", connection.grpc_reconnect_backoff_max_ms),
    ]
