"""Builders: a model → ONNX / INT8 / TensorRT → a versioned Triton model repository, behind gates.

The model comes from one of four sources (:mod:`builders.sources`): a training run (``--run-dir``), a Hugging Face
folder (``--hf-dir``), an ONNX file with a signature TOML (``--onnx``), or a Python factory with safetensors weights
(``--factory``). ``python -m builders --help`` lists the steps; ``python -m builders build --run-dir runs/digits
--repository model_repository`` runs all of them. What lands in the repository::

    model_repository/<model>/config.pbtxt                default: CPU path (python backend running ONNX Runtime)
    model_repository/<model>/configs/cpu_int8.pbtxt      CPU path on the INT8 file (when INT8 passed its margin)
    model_repository/<model>/configs/onnxruntime.pbtxt   onnxruntime_onnx backend (NGC image, CPU or GPU)
    model_repository/<model>/configs/tensorrt.pbtxt      tensorrt_plan backend (GPU host; when a plan was built)
    model_repository/<model>/<N>/model.onnx              FP32 graph, named inputs/outputs, dynamic batch (+ sequence)
                                /model.py                the CPU runtime (builders/runtime/onnx_model.py)
                                /model.int8.onnx         INT8 dynamic quantization (only when accepted)
                                /model.plan(.json)       TensorRT plan + its metadata (GPU builds only)
                                /lineage.json            checkpoint → ONNX → plan hashes, metrics, parity, gate, env
                                /model_config/           the configs this version was published with (rollback)

Text models (a source with a tokenizer) also get ``<model>_tokenizer`` and the ensemble ``<model>_text`` (string
in); classifiers add ``<model>_labels`` (``label``, ``score``, ``probabilities`` out), embedding models return their
``embedding``. The family is published with one version number.
Triton picks a configuration with ``--model-config-name=NAME`` (``clients.serve.ServerConfig.config_name``).

Guarantees: nothing in the repository changes before the gate passes; each version appears in one rename; the last
``publish.keep_versions`` versions are kept and ``python -m builders rollback`` serves any of them again; a failed
step leaves ``status.json`` and ``reproduce.sh`` in its build folder (``.cache/builds/<model>/<build id>/``).
"""
