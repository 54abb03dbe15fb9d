"""``y = x``, except:

* ``x < 0``: an INVALID_ARG error (a client must never retry it);
* ``x >= 1000``: an UNAVAILABLE error the first ``int(x) % 10`` times that value is seen, then success (a client with
  retries succeeds on attempt ``int(x) % 10 + 1``).
"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.seen = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy().astype(np.float32)
            value = float(x.reshape(-1)[0])
            error = None
            if value < 0:
                error = pb_utils.TritonError(f"x must be >= 0, got {value}", pb_utils.TritonError.INVALID_ARG)
            elif value >= 1000:
                self.seen[value] = self.seen.get(value, 0) + 1
                if self.seen[value] <= int(value) % 10:
                    error = pb_utils.TritonError(f"temporarily unavailable (attempt {self.seen[value]})",
                                                 pb_utils.TritonError.UNAVAILABLE)
            if error is not None:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", x)]))
        return responses
