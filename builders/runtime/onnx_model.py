"""Triton python-backend model: any ONNX graph on ONNX Runtime (CPU), with dynamic batching done right.

Copied by the builders into every version directory as ``model.py`` next to ``model.onnx`` (and ``model.int8.onnx``).
Self-contained: it imports only numpy, onnxruntime, the standard library and ``triton_python_backend_utils``, because it
also runs inside NGC images where the platform's own packages are not installed.

Every knob is a string parameter of ``config.pbtxt`` (written by ``python -m builders``):

==================================  ==========================================================================
``onnx_file``                       file in the version directory to run (``model.onnx`` or ``model.int8.onnx``)
``intra_op_num_threads``            ONNX Runtime intra-op threads (0 = its default)
``inter_op_num_threads``            inter-op threads (used with ``execution_mode=parallel``)
``allow_spinning``                  ``0``/``1``: busy-waiting threads compete with Triton's on few cores
``graph_optimization_level``        ``ORT_DISABLE_ALL`` … ``ORT_ENABLE_ALL``
``execution_mode``                  ``sequential`` or ``parallel``
``pad_values``                      JSON ``{input: value}``: inputs whose trailing axes may be right-padded to merge
                                    requests of different lengths (only for models whose outputs do not depend on it)
``max_padding_ratio``               merged runs hold at most this many padded tokens per real one (e.g. ``1.25``);
                                    requests of very different lengths then run in several runs (``0``: one run)
``max_dims``                        JSON ``{input: [max per non-batch axis]}``: larger requests are refused alone
``token_inputs``                    JSON ``{input: {"vocab_size": V, "pad_id": P}}``: token-id inputs; ids must lie
                                    in ``[0, V)`` (the tokenizer's vocabulary) and every row needs one id != P
==================================  ==========================================================================

Client mistakes are answered with Triton's invalid-argument code (HTTP 400, gRPC ``INVALID_ARGUMENT``) and a message
naming the input and what is allowed: an axis longer than ``max_dims``, an empty input (an axis of size 0), NaN or
Inf in a floating-point input, token ids outside the vocabulary (negative ids included: ONNX Runtime's Gather would
wrap them to the last rows), and rows made only of padding. Anything that still fails inside ONNX Runtime is a server
error (INTERNAL).

Overload: the CPU configurations have no queue policy (with one, Triton 2.51 holds some requests to python-backend
models for ~500 ms), so Triton never drops a queued request that its client gave up on, and inside an ensemble not
even a cancelled gRPC call is dropped. A client may send its deadline as the request parameter ``deadline_unix_ms``
(Triton passes request parameters to every step of an ensemble): a request that reaches ``execute`` after it is
answered UNAVAILABLE ("request timeout expired", the words of Triton's own queue rejection) without being computed,
so a backlog of abandoned requests drains at once instead of being computed for nobody.

``execute`` receives every request the dynamic batcher gathered. It validates each request on its own (a bad one gets
its own error response), merges the rest along the batch axis (right-padding the ``pad_values`` inputs, grouping by
shape otherwise), runs ONNX Runtime once per group, and hands each request its slice of the outputs. If a merged run
fails, the group is re-run request by request so only the request that caused it gets the error.

Padding is compute: a 13-token message merged with a 255-token one costs 255 tokens (and attention grows with the
square of the length), so on a CPU one run of everything the batcher gathered can cost more than the requests alone.
With ``max_padding_ratio`` the requests of a group are sorted by length and cut into runs whose padded size stays
within that ratio of their real size (:func:`length_runs`); each request still gets exactly its own answer.
"""
import json
import os
import time

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_LEVELS = {
    "ORT_DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


DEADLINE_PARAMETER = "deadline_unix_ms"


def late_by(request):
    """Milliseconds by which ``request`` missed the deadline its client sent (request parameter ``deadline_unix_ms``,
    wall-clock milliseconds since the epoch), or None when it has none or is in time."""
    try:
        deadline = json.loads(request.parameters() or "{}").get(DEADLINE_PARAMETER)
    except (ValueError, AttributeError):
        return None
    now = time.time() * 1000.0
    return now - deadline if isinstance(deadline, (int, float)) and now > deadline else None


def expired_message(late_ms):
    # "request timeout expired" is Triton's own phrase for a queue-policy rejection: clients count it as overload
    return f"request timeout expired: the client's deadline passed {late_ms:.0f} ms before the request ran; not computed"


class InvalidInput(ValueError):
    """A client mistake: answered with Triton's invalid-argument code, never as a server error."""


def length_runs(sizes, max_ratio):
    """Cut requests into runs of similar length: ``sizes`` is ``[(rows, length), ...]`` per request; returns lists of
    indices into ``sizes``, each list one run whose padded tokens (rows x its longest length) stay within
    ``max_ratio`` x its real tokens (sum of rows x length). ``max_ratio <= 0``: everything in one run."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][1])
    if max_ratio <= 0 or len(order) < 2:
        return [order]
    runs, current, rows, real = [], [], 0, 0
    for i in order:  # ascending length: the request being added is the run's longest
        n, length = sizes[i]
        if current and (rows + n) * length > max_ratio * (real + n * length):
            runs.append(current)
            current, rows, real = [], 0, 0
        current.append(i)
        rows += n
        real += n * length
    runs.append(current)
    return runs


def _parameters(config):
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", "0"))
        options.inter_op_num_threads = int(params.get("inter_op_num_threads", "0"))
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if params.get("execution_mode") == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        level = params.get("graph_optimization_level", "ORT_ENABLE_ALL")
        if level not in _LEVELS:
            raise ValueError(f"parameter graph_optimization_level is {level!r}; expected one of {sorted(_LEVELS)}")
        options.graph_optimization_level = _LEVELS[level]
        spinning = params.get("allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = [item["name"] for item in config["input"]]
        self.output_names = [item["name"] for item in config["output"]]
        pads = json.loads(params.get("pad_values", "{}"))
        self.pad_values = [pads.get(name) for name in self.input_names]
        self.max_padding_ratio = float(params.get("max_padding_ratio", "0"))
        limits = json.loads(params.get("max_dims", "{}"))
        self.max_dims = [tuple(limits[name]) if name in limits else None for name in self.input_names]
        tokens = json.loads(params.get("token_inputs", "{}"))
        self.token_limits = [tokens.get(name) for name in self.input_names]
        # Triton warms every instance up before the model serves anyone, with zero ids (rows of only padding) and
        # random bytes as floats (NaN and Inf among them), and an error answer to a warm-up request fails the model's
        # load (Triton 2.51 even crashed on one in our tests). No client request can reach the instance before its warm-up ends, so the first requests, as many as
        # the warm-up sends (batch_size one-row requests per sample, count times), skip the content checks.
        self.warmup_left = sum(max(1, int(w.get("batch_size", 1))) * max(1, int(w.get("count", 1)))
                               for w in config.get("model_warmup", []))

    # -- validation: every check names the input and what it allows --------------------------------------------------
    @staticmethod
    def _check_shape(name, array, limit):
        if array.size == 0:
            raise InvalidInput(f"input '{name}' is empty (shape {list(array.shape)}); every axis needs at least one "
                               "element")
        if limit is not None and any(size > most for size, most in zip(array.shape[1:], limit)):
            raise InvalidInput(f"input '{name}' has shape {list(array.shape)}; the non-batch axes allow at most "
                               f"{list(limit)}")

    @staticmethod
    def _check_finite(name, array):
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            where = np.argwhere(~np.isfinite(array))[0].tolist()
            raise InvalidInput(f"input '{name}' holds NaN or Inf (first at index {where}); only finite values are "
                               "allowed")

    @staticmethod
    def _check_ids(name, array, limits):
        if limits is None or array.dtype.kind not in "iu":
            return
        vocab = limits.get("vocab_size")
        low, high = int(array.min()), int(array.max())
        if low < 0 or (vocab is not None and high >= vocab):
            bad = low if low < 0 else high
            allowed = f"[0, {vocab - 1}]" if vocab is not None else "ids >= 0"
            raise InvalidInput(f"input '{name}' holds token id {bad}; the vocabulary allows {allowed}")

    @staticmethod
    def _check_padding(name, array, limits):
        pad = None if limits is None else limits.get("pad_id")
        if pad is None or array.dtype.kind not in "iu":
            return
        rows = array.reshape(array.shape[0], -1)
        empty = np.flatnonzero((rows == pad).all(axis=1))
        if empty.size:
            raise InvalidInput(f"input '{name}' row {int(empty[0])} is only padding (id {pad}); every row needs "
                               "at least one real token")

    # -- one request -------------------------------------------------------------------------------------------------
    def _inputs_of(self, request):
        warming_up = self.warmup_left > 0
        self.warmup_left -= warming_up
        arrays = []
        for name, limit, tokens in zip(self.input_names, self.max_dims, self.token_limits):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise InvalidInput(f"input '{name}' is missing")
            array = tensor.as_numpy()
            self._check_shape(name, array, limit)
            self._check_ids(name, array, tokens)
            if not warming_up:
                self._check_finite(name, array)
                self._check_padding(name, array, tokens)
            arrays.append(array)
        return arrays

    def _respond(self, outputs, start, stop):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, out[start:stop]) for name, out in zip(self.output_names, outputs)])

    @staticmethod
    def _error(message, code=None):
        code = pb_utils.TritonError.INTERNAL if code is None else code
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    # -- merging -----------------------------------------------------------------------------------------------------
    def _group_key(self, arrays):
        """Requests with equal keys can share one run: equal shapes on every input that may not be padded."""
        return tuple(a.shape[1:] for a, pad in zip(arrays, self.pad_values) if pad is None)

    def _merge(self, parts, pad):
        first = parts[0]
        if len(parts) == 1:
            return first
        trailing = tuple(max(sizes) for sizes in zip(*(p.shape[1:] for p in parts)))
        if all(p.shape[1:] == trailing for p in parts):
            return np.concatenate(parts, axis=0)
        merged = np.full((sum(p.shape[0] for p in parts),) + trailing, pad, dtype=first.dtype)
        row = 0
        for part in parts:
            merged[(slice(row, row + part.shape[0]),) + tuple(slice(0, s) for s in part.shape[1:])] = part
            row += part.shape[0]
        return merged

    def _run_group(self, group, responses):
        """``group``: list of (response index, input arrays). One ONNX Runtime call for all of them."""
        try:
            feeds = {name: self._merge([arrays[k] for _, arrays in group], pad)
                     for k, (name, pad) in enumerate(zip(self.input_names, self.pad_values))}
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:  # ONNX Runtime errors (e.g. an id outside the vocabulary)
            if len(group) == 1:
                responses[group[0][0]] = self._error(f"inference failed: {str(exc).splitlines()[0]}")
                return
            for item in group:  # isolate the request that caused it
                self._run_group([item], responses)
            return
        start = 0
        for index, arrays in group:
            stop = start + arrays[0].shape[0]
            responses[index] = self._respond(outputs, start, stop)
            start = stop

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            late = late_by(request)
            if late is not None:
                responses[index] = self._error(expired_message(late), pb_utils.TritonError.UNAVAILABLE)
                continue
            try:
                arrays = self._inputs_of(request)
            except InvalidInput as exc:
                responses[index] = self._error(str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            groups.setdefault(self._group_key(arrays), []).append((index, arrays))
        for group in groups.values():
            for run in self._length_runs(group):
                self._run_group(run, responses)
        return responses

    def _length_runs(self, group):
        """``group`` cut into runs of similar length (see :func:`length_runs`); one run without padded inputs."""
        padded = [k for k, pad in enumerate(self.pad_values) if pad is not None]
        if not padded or len(group) < 2 or self.max_padding_ratio <= 0:
            return [group]
        sizes = [(arrays[padded[0]].shape[0], max(int(np.prod(arrays[k].shape[1:])) for k in padded))
                 for _, arrays in group]
        return [[group[i] for i in run] for run in length_runs(sizes, self.max_padding_ratio)]
