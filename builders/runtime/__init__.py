"""Python-backend models that the builders copy into version directories as ``model.py``.

They are self-contained on purpose (numpy, onnxruntime, tokenizers, the standard library and Triton's
``triton_python_backend_utils`` only): they run inside Triton's python backend, here from the nvidia-pytriton wheel and
on GPU hosts inside NGC images where this repository's packages are not installed.

* ``onnx_model.py``: the CPU serving path, any ONNX model on ONNX Runtime with dynamic batching;
* ``tokenizer_model.py``: raw text → token ids with a Hugging Face ``tokenizers`` file (``textclf`` ensemble);
* ``labels_model.py``: class probabilities → label string and score (``textclf`` ensemble).
"""
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent
ONNX_MODEL = RUNTIME_DIR / "onnx_model.py"
TOKENIZER_MODEL = RUNTIME_DIR / "tokenizer_model.py"
LABELS_MODEL = RUNTIME_DIR / "labels_model.py"
