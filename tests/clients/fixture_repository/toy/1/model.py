"""Fixed linear classifier: logits = features @ W + b, probabilities = softmax(logits).

The weights are public (``WEIGHTS``/``BIAS``) so tests compute the expected outputs with numpy.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS = np.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0], [-1.5, 0.25, 1.0], [0.75, -0.5, 2.0]], dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])

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
