"""Triton python-backend model: class probabilities → the predicted label (BYTES) and its score (FP32).

Copied by the builders as ``model.py`` next to ``labels.json`` (the training manifest's ``labels``, index i = class i).
Input ``probabilities`` [rows, classes]; outputs ``label`` [rows, 1] and ``score`` [rows, 1]. Self-contained: numpy,
the standard library and ``triton_python_backend_utils`` only. A wrong number of classes, an empty input or NaN/Inf
values are client mistakes, answered with Triton's invalid-argument code and a message naming the input.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, params.get("labels_file", "labels.json")), encoding="utf-8") as fh:
            labels = json.load(fh)
        self.labels = np.array([label.encode("utf-8") for label in labels], dtype=object)
        self.input_name = config["input"][0]["name"]

    def _problem(self, probabilities):
        """What is wrong with a request's input, or None."""
        if probabilities.ndim < 2 or probabilities.shape[-1] != len(self.labels):
            return (f"input '{self.input_name}' has shape {list(probabilities.shape)}; expected [rows, "
                    f"{len(self.labels)}] (one value per class of labels.json)")
        if probabilities.size == 0:
            return f"input '{self.input_name}' is empty (shape {list(probabilities.shape)}); expected at least one row"
        if not np.isfinite(probabilities).all():
            return f"input '{self.input_name}' holds NaN or Inf; only finite values are allowed"
        return None

    def execute(self, requests):
        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            problem = self._problem(probabilities)
            if problem:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)))
                continue
            best = probabilities.argmax(axis=-1)
            score = np.take_along_axis(probabilities, best[:, None], axis=-1).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", self.labels[best].reshape(-1, 1)),
                pb_utils.Tensor("score", score),
            ]))
        return responses
