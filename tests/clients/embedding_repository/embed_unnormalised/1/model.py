"""Every text gets the same vector of norm 2 (not L2-normalised): load tests of embedding models must flag it."""
import numpy as np
import triton_python_backend_utils as pb_utils

DIMS = 384


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().shape[0]
            vectors = np.full((rows, DIMS), 2.0 / np.sqrt(DIMS), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embedding", vectors)]))
        return responses
