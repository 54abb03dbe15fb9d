"""A deterministic bag-of-tokens embedding: the L2-normalised sum of one seeded random vector per token id where the
attention mask is 1 (seed: the id), so padding never changes a row's vector. A request whose token_type_ids differ
in shape from its input_ids is refused, as a real encoder would fail."""
import numpy as np
import triton_python_backend_utils as pb_utils

DIMS = 384


def embed(ids, mask):
    total = np.zeros(DIMS, dtype=np.float64)
    for token, keep in zip(ids, mask):
        if keep:
            total += np.random.default_rng(int(token)).standard_normal(DIMS)
    norm = np.linalg.norm(total)
    return (total / norm if norm > 0 else total).astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            types = pb_utils.get_input_tensor_by_name(request, "token_type_ids").as_numpy()
            if ids.shape != mask.shape or ids.shape != types.shape:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"input_ids {ids.shape}, attention_mask {mask.shape} and token_type_ids {types.shape} differ")))
                continue
            vectors = np.stack([embed(i, m) for i, m in zip(ids, mask)]).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embedding", vectors)]))
        return responses
