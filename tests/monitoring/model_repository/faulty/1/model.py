"""A fixed linear classifier over 8x8 images that fails on invalid input: Triton's failure counters under test.

Batched requests arrive together under dynamic batching. A negative pixel is invalid input for the digits data set
(intensities 0..16): the model then raises, which fails the whole batch, and Triton counts each of its requests in
nv_inference_request_failure{reason="BACKEND"}. (An error *response* per request would be counted as a success by
Triton 2.51: only the callers would see it.)
"""
import numpy as np
import triton_python_backend_utils as pb_utils

_WEIGHTS = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            if (image < 0).any():
                raise pb_utils.TritonModelException("image pixels must be 0..16; got a negative value")
            logits = image.reshape(image.shape[0], 64) @ _WEIGHTS
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits.astype(np.float32)),
                                                         pb_utils.Tensor("probabilities", probabilities)]))
        return responses
