"""A deterministic bag-of-words embedding: the L2-normalised sum of one seeded random vector per lower-cased word
(seed: the word's CRC-32). Texts sharing words point the same way; an empty text is the zero vector."""
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

DIMS = 384


def embed(text):
    total = np.zeros(DIMS, dtype=np.float64)
    for word in text.lower().split():
        total += np.random.default_rng(zlib.crc32(word.encode("utf-8"))).standard_normal(DIMS)
    norm = np.linalg.norm(total)
    return (total / norm if norm > 0 else total).astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
            vectors = np.stack([embed(t) for t in texts]).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embedding", vectors)]))
        return responses
