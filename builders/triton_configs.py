"""``config.pbtxt`` files built as typed ``inference.ModelConfig`` messages, never from string templates.

Every configuration the builders write is constructed here from the manifest, the derived profiles
(:mod:`builders.shapes`) and :class:`builders.settings.BuildConfig`, then serialized with protobuf's ``text_format`` and
parsed back with Triton's schema (:func:`validate`), so a field name or enum value that ``model_config.proto`` does not
know cannot reach disk. One model directory holds one configuration per serving target:

==========================  =================================================================================
``config.pbtxt``            the CPU path: python backend running ONNX Runtime (``builders/runtime/onnx_model.py``)
``configs/cpu_int8.pbtxt``  the same, on the INT8 file (only when INT8 passed its accuracy margin)
``configs/onnxruntime.pbtxt``  Triton's ``onnxruntime_onnx`` backend (NGC images, CPU or GPU)
``configs/tensorrt.pbtxt``  ``tensorrt_plan`` on a GPU host (only when a plan was built)
==========================  =================================================================================

Triton reads ``configs/NAME.pbtxt`` when started with ``--model-config-name=NAME`` and ``config.pbtxt`` otherwise.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from common.manifest import Manifest, TensorSpec
from common.triton_config import config_to_text, parse_config_text
from builders.dtypes import triton_type
from builders.settings import BuildConfig
from builders.shapes import Profile, WarmupSample, max_dims, warmup_samples

CPU_INT8 = "cpu_int8"
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _dims(spec: TensorSpec) -> list[int]:
    """Triton dims of a batched tensor: the batch axis dropped, -1 for every other dynamic axis."""
    return [d if isinstance(d, int) else -1 for d in spec.shape[1:]]


def _add_io(config, manifest: Manifest) -> None:
    for spec in manifest.inputs:
        config.input.add(name=spec.name, data_type=triton_type(spec.dtype), dims=_dims(spec))
    for spec in manifest.outputs:
        config.output.add(name=spec.name, data_type=triton_type(spec.dtype), dims=_dims(spec))


def _set_version_policy(config) -> None:
    """Always ``latest 1``: publishing, rollback (re-published as the newest version), the promotion gate's baseline
    and ``versions`` all take "serving" to mean "the highest version number"; no other policy is offered. Publication
    adjusts a text family (builders.repository.publication_configs): the ensemble serves only its own version and
    names its members' exact versions, and the models it composes keep two versions loaded for a rollout."""
    config.version_policy.latest.num_versions = 1


def _set_dynamic_batching(config, settings: BuildConfig, queue_policy: bool = True) -> None:
    """Dynamic batching; with ``queue_policy`` a bounded queue whose expired requests are rejected, not run late.

    The python-backend configs pass ``settings.cpu_runtime.queue_policy`` (see its description for why it is off).
    """
    batching = settings.serving.dynamic_batching
    if not batching.enabled:
        return
    pb = _pb()
    db = config.dynamic_batching
    db.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    db.preferred_batch_size.extend(sorted(set(batching.preferred_batch_sizes)))
    db.preserve_ordering = batching.preserve_ordering
    if not queue_policy:
        return
    queue = db.default_queue_policy
    queue.max_queue_size = batching.queue.max_queue_size
    queue.default_timeout_microseconds = batching.queue.timeout_microseconds
    queue.timeout_action = pb.ModelQueuePolicy.REJECT
    queue.allow_timeout_override = batching.queue.allow_timeout_override


def _add_warmup(config, manifest: Manifest, samples: Sequence[WarmupSample], count: int) -> None:
    dtypes = {spec.name: spec.dtype for spec in manifest.inputs}
    for sample in samples:
        warm = config.model_warmup.add(name=sample.name, batch_size=sample.batch_size, count=count)
        for name, dims in sample.dims.items():
            entry = warm.inputs[name]
            entry.data_type = triton_type(dtypes[name])
            entry.dims.extend(dims)
            # random integers could fall outside an embedding table; zeros are always valid ids
            if dtypes[name].startswith("float"):
                entry.random_data = True
            else:
                entry.zero_data = True


def _set_parameters(config, values: dict[str, Any]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value if isinstance(value, str) else json.dumps(value)


def pad_values(manifest: Manifest) -> dict[str, int]:
    """Inputs the CPU runtime may right-pad to merge requests: only when the manifest gives a pad id and no output
    has a dynamic non-batch axis (so padding cannot change what a request gets back). ``input_ids`` pads with the pad
    id; inputs named in ``preprocessing.pad_values`` (``attention_mask``, ``token_type_ids``: 0) with their own."""
    pad = manifest.preprocessing.get("pad_id")
    if pad is None or any(isinstance(d, str) for spec in manifest.outputs for d in spec.shape[1:]):
        return {}
    own = manifest.preprocessing.get("pad_values") or {}
    return {spec.name: int(own.get(spec.name, pad)) for spec in manifest.inputs
            if any(isinstance(d, str) for d in spec.shape[1:])}


def tokenizer_vocab_size(path) -> int:
    """Ids a ``tokenizers`` file can produce (added tokens included): the vocabulary the served model is checked against."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)


def token_inputs(manifest: Manifest, vocab_size: int | None = None) -> dict[str, dict[str, int]]:
    """Token-id inputs and what the CPU runtime checks on them (``token_inputs`` parameter): ids in ``[0, vocab_size)``
    and, with a pad id, one non-pad id per row. ``vocab_size`` is the tokenizer's (:func:`tokenizer_vocab_size`); the
    bound is never above the embedding rows the architecture declares (``arch.vocab_size``)."""
    integer = [spec for spec in manifest.inputs if spec.dtype in ("int64", "int32")]
    names = [spec.name for spec in integer if spec.name == "input_ids"]
    if not names and manifest.tokenizer is not None and integer and integer[0] is manifest.inputs[0]:
        names = [integer[0].name]
    bounds = [v for v in (vocab_size, manifest.preprocessing.get("vocab_size"), manifest.arch.get("vocab_size"))
              if isinstance(v, int) and v > 0]
    limits: dict[str, int] = {}
    if bounds:
        limits["vocab_size"] = min(bounds)
    if isinstance(manifest.preprocessing.get("pad_id"), int):
        limits["pad_id"] = manifest.preprocessing["pad_id"]
    return {name: dict(limits) for name in names} if limits else {}


def _base(name: str, manifest: Manifest, settings: BuildConfig, queue_policy: bool = True):
    config = _pb().ModelConfig()
    config.name = name
    config.max_batch_size = settings.serving.max_batch_size
    _set_version_policy(config)
    _add_io(config, manifest)
    _set_dynamic_batching(config, settings, queue_policy)
    if manifest.labels:
        # class names travel with the served model, whatever the backend, so clients can name classes (backends
        # ignore parameters they do not know)
        _set_parameters(config, {"labels": list(manifest.labels)})
    return config


def cpu_config(name: str, manifest: Manifest, profiles: Sequence[Profile], settings: BuildConfig,
               onnx_file: str = "model.onnx", vocab_size: int | None = None):
    """The CPU path: python backend + ONNX Runtime, every session option a parameter; ``vocab_size``: the tokenizer's
    (see :func:`token_inputs`)."""
    pb = _pb()
    config = _base(name, manifest, settings, queue_policy=settings.cpu_runtime.queue_policy)
    config.backend = "python"
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=settings.serving.cpu_instances)
    rt = settings.cpu_runtime
    pads = pad_values(manifest)
    for tensor in config.input:
        # Triton's dynamic batcher only merges requests of equal shapes unless an input is ragged: without this,
        # raw text (every message its own length) would run one request at a time. The runtime receives each
        # request's own tensor and right-pads them to the longest in the batch (``pad_values``).
        tensor.allow_ragged_batch = tensor.name in pads
    _set_parameters(config, {
        "onnx_file": onnx_file,
        "intra_op_num_threads": str(rt.intra_op_num_threads),
        "inter_op_num_threads": str(rt.inter_op_num_threads),
        "allow_spinning": "1" if rt.allow_spinning else "0",
        "graph_optimization_level": rt.graph_optimization_level,
        "execution_mode": rt.execution_mode,
        "pad_values": pads,
        "max_padding_ratio": str(rt.max_padding_ratio),
        "max_dims": max_dims(profiles),
        "token_inputs": token_inputs(manifest, vocab_size),
    })
    _add_warmup(config, manifest, warmup_samples(profiles, settings.serving.warmup_batch_sizes,
                                                 settings.serving.max_batch_size), settings.serving.warmup_count)
    return config


def onnxruntime_config(name: str, manifest: Manifest, profiles: Sequence[Profile], settings: BuildConfig):
    """Triton's own ``onnxruntime_onnx`` backend on ``model.onnx`` (NGC images; KIND_AUTO picks a GPU when present)."""
    pb = _pb()
    config = _base(name, manifest, settings)
    config.platform = "onnxruntime_onnx"
    config.backend = "onnxruntime"
    config.default_model_filename = "model.onnx"
    kind = getattr(pb.ModelInstanceGroup, settings.serving.onnxruntime_kind)
    count = settings.serving.gpu_instances if kind != pb.ModelInstanceGroup.KIND_CPU else settings.serving.cpu_instances
    config.instance_group.add(kind=kind, count=count)
    _set_parameters(config, {"intra_op_thread_count": str(settings.cpu_runtime.intra_op_num_threads),
                             "inter_op_thread_count": str(settings.cpu_runtime.inter_op_num_threads)})
    _add_warmup(config, manifest, warmup_samples(profiles, settings.serving.warmup_batch_sizes,
                                                 settings.serving.max_batch_size), settings.serving.warmup_count)
    return config


def tensorrt_config(name: str, manifest: Manifest, profiles: Sequence[Profile], settings: BuildConfig):
    """``tensorrt_plan`` on ``model.plan``: one GPU instance group using every optimization profile of the plan."""
    pb = _pb()
    config = _base(name, manifest, settings)
    config.platform = "tensorrt_plan"
    config.backend = "tensorrt"
    config.default_model_filename = "model.plan"
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=settings.serving.gpu_instances,
                              profile=[str(p.index) for p in profiles])
    _add_warmup(config, manifest, warmup_samples(profiles, settings.serving.warmup_batch_sizes,
                                                 settings.serving.max_batch_size), settings.serving.warmup_count)
    return config


# -- raw text in: tokenizer -> model (-> labels for classifiers) -------------------------------------------------
def tokenizer_config(name: str, settings: BuildConfig, pad_id: int, outputs: Sequence[TensorSpec] | str,
                     max_length: int | None = None, pad_values: dict[str, int] | None = None):
    """Raw text → the model's token inputs (``input_ids`` and, for BERT-family models, ``attention_mask`` and
    ``token_type_ids``), each ``[-1]`` per row, right-padded per request; truncation at ``max_length``."""
    pb = _pb()
    if isinstance(outputs, str):
        outputs = [TensorSpec(name=outputs, dtype="int64", shape=("batch", "sequence"))]
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=settings.serving.max_batch_size)
    _set_version_policy(config)
    config.input.add(name="text", data_type="TYPE_STRING", dims=[1])
    for spec in outputs:
        config.output.add(name=spec.name, data_type=triton_type(spec.dtype), dims=[-1])
    _set_dynamic_batching(config, settings, settings.cpu_runtime.queue_policy)
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    params: dict[str, Any] = {"tokenizer_file": "tokenizer.json", "pad_id": str(pad_id)}
    if max_length:
        params["max_length"] = str(int(max_length))
    if pad_values:
        params["pad_values"] = {k: int(v) for k, v in pad_values.items()}
    _set_parameters(config, params)
    return config


def labels_config(name: str, settings: BuildConfig, num_classes: int):
    pb = _pb()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=settings.serving.max_batch_size)
    _set_version_policy(config)
    config.input.add(name="probabilities", data_type="TYPE_FP32", dims=[num_classes])
    config.output.add(name="label", data_type="TYPE_STRING", dims=[1])
    config.output.add(name="score", data_type="TYPE_FP32", dims=[1])
    _set_dynamic_batching(config, settings, settings.cpu_runtime.queue_policy)
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    _set_parameters(config, {"labels_file": "labels.json"})
    return config


def _token_maps(input_names: Sequence[str] | str) -> tuple[dict[str, str], dict[str, str]]:
    """Ensemble tensor names between the tokenizer and the model: ``input_ids`` → ``_input_ids`` and so on."""
    names = [input_names] if isinstance(input_names, str) else list(input_names)
    return {n: f"_{n}" for n in names}, {n: f"_{n}" for n in names}


def text_ensemble_config(name: str, settings: BuildConfig, tokenizer: str, classifier: str, labels: str,
                         input_names: Sequence[str] | str, num_classes: int):
    """``text`` → tokenizer → classifier → labels; clients send strings and get ``label``, ``score``, ``probabilities``."""
    pb = _pb()
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=settings.serving.max_batch_size)
    _set_version_policy(config)
    config.input.add(name="text", data_type="TYPE_STRING", dims=[1])
    config.output.add(name="label", data_type="TYPE_STRING", dims=[1])
    config.output.add(name="score", data_type="TYPE_FP32", dims=[1])
    config.output.add(name="probabilities", data_type="TYPE_FP32", dims=[num_classes])
    produced, consumed = _token_maps(input_names)
    steps = config.ensemble_scheduling
    steps.step.add(model_name=tokenizer, model_version=-1, input_map={"text": "text"}, output_map=produced)
    steps.step.add(model_name=classifier, model_version=-1, input_map=consumed,
                   output_map={"probabilities": "probabilities"})
    steps.step.add(model_name=labels, model_version=-1, input_map={"probabilities": "probabilities"},
                   output_map={"label": "label", "score": "score"})
    return config


def text_passthrough_ensemble_config(name: str, settings: BuildConfig, tokenizer: str, model: str,
                                     input_names: Sequence[str], outputs: Sequence[TensorSpec]):
    """``text`` → tokenizer → model, the model's outputs returned as they are (embeddings, generic text models):
    for an embedding encoder, strings in and ``embedding`` ``[dim]`` (L2-normalised) out."""
    pb = _pb()
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=settings.serving.max_batch_size)
    _set_version_policy(config)
    config.input.add(name="text", data_type="TYPE_STRING", dims=[1])
    for spec in outputs:
        config.output.add(name=spec.name, data_type=triton_type(spec.dtype), dims=_dims(spec))
    produced, consumed = _token_maps(input_names)
    steps = config.ensemble_scheduling
    steps.step.add(model_name=tokenizer, model_version=-1, input_map={"text": "text"}, output_map=produced)
    steps.step.add(model_name=model, model_version=-1, input_map=consumed,
                   output_map={spec.name: spec.name for spec in outputs})
    return config


def to_text(config) -> str:
    """Serialize and re-parse with Triton's schema: what is returned is known to be a valid ``model_config.proto``."""
    text = config_to_text(config)
    parse_config_text(text, f"generated configuration of {config.name!r}")
    return text
