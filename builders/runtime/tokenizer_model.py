"""Triton python-backend model: raw UTF-8 text → the model's token inputs, with the model's own ``tokenizer.json``.

Copied by the builders as ``model.py`` next to ``tokenizer.json`` (the training run's fitted tokenizer, or a Hugging
Face model's own file, so text is tokenized exactly as the model expects). Input ``text`` (BYTES, one string per row).
Outputs are named after the model inputs they feed, each INT64 ``[rows, longest]`` right-padded per request:

=================  ==========================================  =====================
output             from the ``tokenizers`` Encoding             padded with
=================  ==========================================  =====================
``input_ids``      ``ids``                                      parameter ``pad_id``
``attention_mask`` ``attention_mask``                           0
``token_type_ids`` ``type_ids``                                 0
=================  ==========================================  =====================

Parameter ``max_length`` truncates every text to the model's maximum sequence length (the file's own padding
setting is switched off: requests are padded to their longest row only, and the model step merges requests of
different lengths itself, see ``allow_ragged_batch``). All requests of a dynamic batch are encoded in one
``encode_batch`` call (Rust, multi-threaded). Self-contained: tokenizers, numpy, the standard library and
``triton_python_backend_utils`` only.
"""
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


def late_by(request):
    """Milliseconds by which ``request`` missed its client's deadline (request parameter ``deadline_unix_ms``, passed
    by Triton to every ensemble step), or None; see ``onnx_model.py`` for why the runtimes enforce it themselves."""
    try:
        deadline = json.loads(request.parameters() or "{}").get("deadline_unix_ms")
    except (ValueError, AttributeError):
        return None
    now = time.time() * 1000.0
    return now - deadline if isinstance(deadline, (int, float)) and now > deadline else None


class InvalidText(ValueError):
    """A client mistake: answered with Triton's invalid-argument code."""


def decoded_rows(array, name):
    """The request's strings. Refused (:class:`InvalidText`): no rows, bytes that are not UTF-8, and empty or
    whitespace-only text: on purpose, because the classifier would otherwise see only its start token and answer a
    confident label for nothing."""
    rows = array.reshape(-1)
    if rows.size == 0:
        raise InvalidText(f"input '{name}' is empty; expected at least one string")
    decoded = []
    for row, value in enumerate(rows):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError as exc:
            raise InvalidText(f"input '{name}' row {row} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise InvalidText(f"input '{name}' row {row}: text is empty; expected at least one non-space character")
        decoded.append(text)
    return decoded

_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, params.get("tokenizer_file", "tokenizer.json")))
        self.tokenizer.no_padding()
        max_length = int(params.get("max_length", "0") or 0)
        if max_length > 0:
            self.tokenizer.enable_truncation(max_length=max_length)
        pad_id = int(params.get("pad_id", "0"))
        pads = json.loads(params.get("pad_values", "{}") or "{}")
        self.input_name = config["input"][0]["name"]
        self.outputs = []
        for item in config["output"]:
            name = item["name"]
            field = _FIELDS.get(name, "ids")  # a single-output tokenizer may name its ids after the model's input
            pad = pads.get(name, pad_id if field == "ids" else 0)
            self.outputs.append((name, field, int(pad)))

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, owners = [], []
        for index, request in enumerate(requests):
            late = late_by(request)
            if late is not None:  # Triton's own words for a queue-policy rejection: clients count it as overload
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"request timeout expired: the client's deadline passed {late:.0f} ms before the request ran; "
                    "not computed", pb_utils.TritonError.UNAVAILABLE))
                continue
            try:
                decoded = decoded_rows(pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy(),
                                       self.input_name)
            except InvalidText as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                continue
            owners.append((index, len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        encodings = self.tokenizer.encode_batch(texts) if texts else []
        for index, start, stop in owners:
            chunk = encodings[start:stop]
            width = max((len(e.ids) for e in chunk), default=1) or 1
            tensors = []
            for name, field, pad in self.outputs:
                array = np.full((len(chunk), width), pad, dtype=np.int64)
                for row, encoding in enumerate(chunk):
                    values = getattr(encoding, field)
                    array[row, :len(values)] = values
                tensors.append(pb_utils.Tensor(name, array))
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses
