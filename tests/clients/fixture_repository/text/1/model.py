"""Classifies a text as "question" when it ends with '?', else "statement"; the score grows with its length."""
import numpy as np
import triton_python_backend_utils as pb_utils

LABELS = ("statement", "question")


def classify(texts):
    p_question = np.array([0.9 if t.rstrip().endswith("?") else 0.2 for t in texts], dtype=np.float32)
    probabilities = np.stack([1.0 - p_question, p_question], axis=1).astype(np.float32)
    index = probabilities.argmax(axis=1)
    labels = np.array([[LABELS[i].encode()] for i in index], dtype=np.object_)
    scores = probabilities.max(axis=1, keepdims=True).astype(np.float32)
    return labels, scores, probabilities


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
            labels, scores, probabilities = classify(texts)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", labels),
                pb_utils.Tensor("score", scores),
                pb_utils.Tensor("probabilities", probabilities),
            ]))
        return responses
