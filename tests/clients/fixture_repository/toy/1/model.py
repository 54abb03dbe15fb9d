"""Fixed linear classifier: logits = features @ weights + bias, probabilities = softmax(logits).

The weights live in ``weights.json`` next to this file, so tests compute the expected outputs from the same numbers.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

_PARAMS = json.loads((Path(__file__).parent / "weights.json").read_text())
WEIGHTS = np.array(_PARAMS["weights"], dtype=np.float32)
BIAS = np.array(_PARAMS["bias"], dtype=np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            logits = features @ WEIGHTS + BIAS
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("logits", logits.astype(np.float32)),
                pb_utils.Tensor("probabilities", probabilities.astype(np.float32)),
            ]))
        return responses
