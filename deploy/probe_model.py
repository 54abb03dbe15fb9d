"""A probe model for rollouts: ``answer`` returns the version number it was published as, ``idle`` is loaded and never
asked (a repository serving several models, as production ones do, is what breaks naive queue-time averages).

Used by ``python -m deploy local-cluster`` and the object-store tests: seeing which version answered every request is
what proves a rollout switched whole versions without failures. Python backend, so it runs on the CPU wheel's Triton.
"""
from __future__ import annotations

import json
from pathlib import Path

MODEL_PY = '''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.answer = np.float32({value})
        self.delay_s = {delay_s}

    def execute(self, requests):
        if self.delay_s:
            time.sleep(self.delay_s)   # one batch's compute time: lets a bounded load build a queue
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = np.full(x.shape, self.answer, dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return out
'''

CONFIG = '''name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ latest {{ num_versions: 1 }} }}
'''


def make_package(root: Path, answer: float, delay_ms: float = 0.0, max_batch_size: int = 8) -> Path:
    """A build package (builders.repository layout) whose ``answer`` model returns ``answer``, taking ``delay_ms`` per
    batch of at most ``max_batch_size`` requests."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("idle", "answer"):
        (root / name / "version").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, max_batch_size=max_batch_size))
        (root / name / "version" / "model.py").write_text(MODEL_PY.format(value=answer, delay_s=delay_ms / 1000))
    (root / "package.json").write_text(json.dumps({"primary": "answer", "members": ["idle", "answer"]}))
    return root
