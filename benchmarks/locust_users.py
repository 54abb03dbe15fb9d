"""Locust users that call Triton over HTTP (FastHttpUser, binary or JSON tensors) and gRPC (tritonclient), and their
embedding-model variants, which also fail every answer that is not a finite unit vector of the expected size (a
server that answers fast with wrong or empty vectors must not pass a load test).

Request bodies and gRPC input objects are built once per user from the prepared payloads, so the load generator
spends its CPU on sending requests, not on encoding tensors (on a 2-core machine it shares the CPU with the server).
Every request is reported to Locust's statistics and, when enabled, to the client latency histogram that Prometheus
scrapes (see clients/metrics.py), so p99 can be aggregated across load-generator processes.
"""
from __future__ import annotations

import itertools
import random
import re
import time

import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, constant, task

from benchmarks.load_settings import LoadSettings
from benchmarks.payloads import load_payloads
from clients.embeddings import vector_problem
from clients.transports.adapters import GRPC_INFER_GRACE_S

grpc_gevent.init_gevent()  # grpcio must cooperate with gevent, or one call blocks every simulated user

SETTINGS = LoadSettings.from_env()
PAYLOADS = load_payloads(SETTINGS.payload_file)


def _wait_time():
    if SETTINGS.arrival == "poisson":
        rate = SETTINGS.rate_per_user
        return lambda _user: random.expovariate(rate)
    return constant(0)


if SETTINGS.client_metrics_port:
    from clients.metrics import observe_request as _observe_request  # imported up front: a mistake fails at start
else:
    _observe_request = None


def _record_client_metrics(seconds: float, ok: bool) -> None:
    if _observe_request is not None:
        _observe_request(SETTINGS.model, SETTINGS.protocol, seconds, ok)


def _datatype(array) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


class TritonHttpUser(FastHttpUser):
    """POST /v2/models/<model>/infer with pre-encoded bodies (binary tensor data unless http_encoding=json)."""

    wait_time = _wait_time()
    host = f"http://{SETTINGS.host}:{SETTINGS.http_port}"
    network_timeout = SETTINGS.request_timeout_s
    connection_timeout = SETTINGS.request_timeout_s

    def on_start(self):
        import tritonclient.http as httpclient

        binary = SETTINGS.http_encoding == "binary"
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in SETTINGS.outputs] or None
        self.bodies = []
        for payload in PAYLOADS:
            inputs = []
            for name, array in payload.items():
                tensor = httpclient.InferInput(name, list(array.shape), _datatype(array))
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
            headers = {"Content-Type": "application/octet-stream"}
            if json_size is not None:
                headers["Inference-Header-Content-Length"] = str(json_size)
            self.bodies.append((body, headers))
        random.Random(id(self)).shuffle(self.bodies)
        self.cycle = itertools.cycle(self.bodies)
        version = f"/versions/{SETTINGS.model_version}" if SETTINGS.model_version else ""
        self.path = f"/v2/models/{SETTINGS.model}{version}/infer"

    def check(self, resp) -> str | None:
        """What is wrong with a successful (HTTP 200) answer, or None; the embedding user checks its vectors."""
        return None

    @task
    def infer(self):
        body, headers = next(self.cycle)
        start = time.perf_counter()
        with self.client.post(self.path, data=body, headers=headers, name=SETTINGS.model, catch_response=True) as resp:
            ok = resp.status_code == 200
            if not ok:
                detail = (resp.text or "")[:200] if resp.text else str(resp.error)
                resp.failure(f"HTTP {resp.status_code}: {detail}")
            else:
                problem = self.check(resp)
                if problem:
                    ok = False
                    resp.failure(problem)
        _record_client_metrics(time.perf_counter() - start, ok)


class TritonGrpcUser(User):
    """tritonclient's gRPC client inside a Locust user, reporting each call to Locust's statistics."""

    wait_time = _wait_time()

    def on_start(self):
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(f"{SETTINGS.host}:{SETTINGS.grpc_port}")
        self.outputs = [grpcclient.InferRequestedOutput(name) for name in SETTINGS.outputs] or None
        requests = []
        for payload in PAYLOADS:
            inputs = []
            for name, array in payload.items():
                tensor = grpcclient.InferInput(name, list(array.shape), _datatype(array))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            requests.append(inputs)
        random.Random(id(self)).shuffle(requests)
        self.cycle = itertools.cycle(requests)

    def on_stop(self):
        self.client.close()

    def check(self, result) -> str | None:
        """What is wrong with a successful answer (a tritonclient ``InferResult``), or None."""
        return None

    @task
    def infer(self):
        from tritonclient.utils import InferenceServerException

        inputs = next(self.cycle)
        start = time.perf_counter()
        error = None
        length = 0
        try:
            # the deadline also travels to the server, whose CPU runtimes drop requests that reach them after it
            # (builders/runtime/onnx_model.py): the CPU path's overload bound, as Triton 2.51 cannot queue-bound it
            # gRPC's own deadline is a backstop a grace period later: cancellations racing completions at overload
            # rates crash Triton 2.51's gRPC frontend (see clients.transports.adapters.GRPC_INFER_GRACE_S), and the
            # server answers a late request UNAVAILABLE itself, which Locust counts as a rejection
            deadline = {"deadline_unix_ms": int((time.time() + SETTINGS.request_timeout_s) * 1000)}
            result = self.client.infer(SETTINGS.model, inputs, model_version=SETTINGS.model_version,
                                       outputs=self.outputs, parameters=deadline,
                                       client_timeout=SETTINGS.request_timeout_s + GRPC_INFER_GRACE_S)
            length = result.get_response().ByteSize()
            problem = self.check(result)
            if problem:
                error = WrongAnswer(problem)
        except InferenceServerException as exc:
            error = TritonFailure.of(exc)
        elapsed = time.perf_counter() - start
        if error is None and elapsed > SETTINGS.request_timeout_s:  # what a caller with this deadline gets
            error = LateAnswer(f"answered after the {SETTINGS.request_timeout_s:g} s deadline")
        self.environment.events.request.fire(request_type="grpc", name=SETTINGS.model, response_time=elapsed * 1000.0,
                                             response_length=length, exception=error, context={})
        _record_client_metrics(elapsed, error is None)


class TritonFailure(Exception):
    """A failed gRPC call, named by its status and message (tritonclient's exception prints as
    ``InferenceServerException()``, so Locust's failure table could not tell a rejection from a crash)."""

    @classmethod
    def of(cls, exc) -> "TritonFailure":
        message = (exc.message() or "").splitlines()[0] if exc.message() else ""
        message = re.sub(r"\d+(\.\d+)?", "N", message)[:120]  # "deadline passed 31 ms": one kind, not one per ms
        return cls(f"{exc.status() or 'no status'}: {message or 'no message'}")


class LateAnswer(Exception):
    """An answer that came after the request's deadline: the caller had given up (counted as a failure)."""


class WrongAnswer(Exception):
    """A request the server answered, with an answer that fails the user's check (counted as a failure)."""


def embedding_problem(vectors, dims: int) -> str | None:
    if vectors is None:
        return f"no '{SETTINGS.embedding_output}' output in the answer"
    return vector_problem(vectors, dims, rows=1)


class EmbeddingHttpUser(TritonHttpUser):
    """:class:`TritonHttpUser` for an embedding model: asks for the embedding output only (binary) and checks it."""

    def check(self, resp) -> str | None:
        import tritonclient.http as httpclient

        header = resp.headers.get("Inference-Header-Content-Length")
        try:
            result = httpclient.InferResult.from_response_body(resp.content, header_length=int(header) if header else None)
        except Exception as exc:  # a body tritonclient cannot parse is a wrong answer, not a crashed user
            return f"unreadable answer: {exc}"
        return embedding_problem(result.as_numpy(SETTINGS.embedding_output), SETTINGS.embedding_dims)


class EmbeddingGrpcUser(TritonGrpcUser):
    """:class:`TritonGrpcUser` for an embedding model: asks for the embedding output only and checks it."""

    def check(self, result) -> str | None:
        return embedding_problem(result.as_numpy(SETTINGS.embedding_output), SETTINGS.embedding_dims)
