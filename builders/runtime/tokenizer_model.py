"""Triton python-backend model: raw UTF-8 text → token ids, with the training run's own ``tokenizer.json``.

Copied by the builders as ``model.py`` next to ``tokenizer.json`` (the very file the classifier was trained with, so
text is tokenized identically in training and in Triton). Input ``text`` (BYTES, one string per row); output
``input_ids`` (INT64 [rows, longest]), right-padded per request with the ``pad_id`` parameter. Truncation follows the
tokenizer file. All requests of a dynamic batch are encoded in one ``encode_batch`` call (Rust, multi-threaded).
Self-contained: tokenizers, numpy, the standard library and ``triton_python_backend_utils`` only.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(version_dir, params.get("tokenizer_file", "tokenizer.json")))
        self.pad_id = int(params.get("pad_id", "0"))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, owners = [], []
        for index, request in enumerate(requests):
            try:
                rows = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
                decoded = [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in rows]
            except (UnicodeDecodeError, AttributeError) as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"input '{self.input_name}' must be UTF-8 text ({exc})"))
                continue
            owners.append((index, len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        encodings = self.tokenizer.encode_batch(texts) if texts else []
        for index, start, stop in owners:
            rows = [encodings[i].ids for i in range(start, stop)]
            width = max((len(r) for r in rows), default=1) or 1
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            for row, values in enumerate(rows):
                ids[row, :len(values)] = values
            responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, ids)])
        return responses
