"""Check a ``config.pbtxt`` against the artifact it will serve, before Triton ever sees it.

``python -m builders lint MODEL_DIR [--config-name NAME]`` works on generated and hand-written configurations alike
and exits non-zero on any finding. Each finding names the file and the field, and says what the artifact has, e.g.::

    config.pbtxt: input[0].dims: [1, 8, 8] but model.onnx input 'image' has shape [batch, 1, 8, 8]
    configs/tensorrt.pbtxt: max_batch_size: 64 exceeds the TensorRT profile maximum 32

What is compared: names, datatypes and dims of inputs and outputs against the ONNX graph (``model.onnx`` or the python
backend's ``onnx_file``) or, for TensorRT, against the plan's metadata (a plan cannot be deserialized without a GPU);
``max_batch_size`` against the batch axis and the optimization profiles; warm-up requests and preferred batch sizes
against ``max_batch_size`` and the inputs; a python-backend input the runtime pads (``pad_values``) must be
``allow_ragged_batch`` or the batcher never merges requests of different lengths; ensemble steps against the
composing models' configurations. With policy
checks on (the default), a dynamic batcher without a bounded, rejecting queue is a finding too; python-backend models
are exempt unless ``python_queue_policy`` is set, mirroring ``cpu_runtime.queue_policy`` of the builders' settings
(Triton 2.51 delays some requests to python-backend models by ~500 ms when a queue policy is present).

The python-backend helpers the builders write are linted against their own artifacts too: a labels model's input width
against the number of names in its ``labels.json``, a tokenizer's ``tokenizer.json`` must truncate, and (through the
ensemble that feeds its ids to a model) to no more than that model's maximum length. In a repository (not a package)
an ensemble must name the exact version of each step model (see :mod:`builders.repository`), and :func:`lint_all`
also checks every kept version: its files against the SHA-256 in its ``lineage.json`` and its ``model_config``
snapshot against its own files, plus whether its model family is split by an interrupted publication.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.triton_config import config_path, load_config_file
from builders.dtypes import from_triton
from builders.onnx_graph import GraphSignature, GraphTensor, read_signature
from builders.repository import versions
from builders.tensorrt_meta import metadata_path, read_metadata


@dataclass(frozen=True)
class Finding:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


def _dtype_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _selected_versions(config, model_dir: Path, rel: str, findings: list[Finding]) -> list[tuple[str, Path]]:
    found = versions(model_dir)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = found
    elif which == "specific":
        chosen = list(policy.specific.versions)
        for missing in sorted(set(chosen) - set(found)):
            findings.append(Finding(rel, "version_policy.specific.versions", f"version {missing} has no folder in {model_dir}"))
        chosen = [v for v in chosen if v in found]
    else:
        count = policy.latest.num_versions if which == "latest" else 1
        chosen = found[-count:]
    if not found:
        findings.append(Finding(rel, "version", f"{model_dir} has no numeric version folder (expected {model_dir}/1/)"))
    return [(str(v), model_dir / str(v)) for v in chosen]


def check_signature(config, signature: GraphSignature, rel: str, artifact: str) -> list[Finding]:
    """Config inputs/outputs vs an artifact's tensors (names, datatypes, dims with the batch axis handled)."""
    findings = []
    batched = config.max_batch_size > 0
    for kind, declared, actual in (("input", config.input, signature.inputs), ("output", config.output, signature.outputs)):
        for i, tensor in enumerate(declared):
            where = f"{kind}[{i}]"
            graph: GraphTensor | None = actual.get(tensor.name)
            if graph is None:
                findings.append(Finding(rel, f"{where}.name", f"{tensor.name!r} is not an {kind} of {artifact} "
                                        f"(its {kind}s: {', '.join(actual) or 'none'})"))
                continue
            dtype = from_triton(_dtype_name(tensor.data_type))
            if dtype != graph.dtype:
                findings.append(Finding(rel, f"{where}.data_type", f"{_dtype_name(tensor.data_type)} but "
                                        f"{artifact} {kind} {tensor.name!r} is {graph.dtype}"))
            dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            shape = list(graph.shape)
            mismatch = f"{_shape_text(tensor.dims)} but {artifact} {kind} {tensor.name!r} has shape {_shape_text(shape)}"
            if batched:
                if not shape:
                    findings.append(Finding(rel, f"{where}.dims", mismatch))
                    continue
                if isinstance(shape[0], int) and shape[0] < config.max_batch_size:
                    findings.append(Finding(rel, "max_batch_size", f"{config.max_batch_size} but {artifact} {kind} "
                                            f"{tensor.name!r} fixes its batch axis to {shape[0]}"))
                shape = shape[1:]
            if len(dims) != len(shape):
                findings.append(Finding(rel, f"{where}.dims", mismatch))
                continue
            for want, have in zip(dims, shape):
                if isinstance(have, int) and want != have or not isinstance(have, int) and want != -1:
                    findings.append(Finding(rel, f"{where}.dims", mismatch))
                    break
    for kind, declared, actual in (("input", config.input, signature.inputs),):
        names = {t.name for t in declared}
        for name in actual:
            if name not in names:
                findings.append(Finding(rel, kind, f"{artifact} needs {kind} {name!r}, which the configuration does not declare"))
    return findings


def _check_batching_and_warmup(config, rel: str, policy: bool, python_queue_policy: bool = False) -> list[Finding]:
    findings = []
    mbs = config.max_batch_size
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        if mbs == 0:
            findings.append(Finding(rel, "dynamic_batching", "set but max_batch_size is 0 (the model cannot batch)"))
        for size in db.preferred_batch_size:
            if size > mbs:
                findings.append(Finding(rel, "dynamic_batching.preferred_batch_size", f"{size} exceeds max_batch_size {mbs}"))
        if policy and (config.backend != "python" or python_queue_policy):
            queue = db.default_queue_policy
            if not db.HasField("default_queue_policy") or queue.max_queue_size == 0:
                findings.append(Finding(rel, "dynamic_batching.default_queue_policy.max_queue_size",
                                        "unbounded queue: expected a bound so overload is rejected, not queued forever"))
            elif queue.default_timeout_microseconds == 0 or queue.timeout_action != queue.REJECT:
                findings.append(Finding(rel, "dynamic_batching.default_queue_policy",
                                        "expected default_timeout_microseconds > 0 with timeout_action REJECT"))
    inputs = {t.name: t for t in config.input}
    if config.HasField("dynamic_batching") and config.backend == "python" and "pad_values" in config.parameters:
        try:
            padded = json.loads(config.parameters["pad_values"].string_value)
        except ValueError:
            padded = {}
            findings.append(Finding(rel, "parameters['pad_values']", "not JSON: expected {\"input\": pad value}"))
        for name in padded:
            if name in inputs and not inputs[name].allow_ragged_batch:
                findings.append(Finding(rel, f"input[{name!r}].allow_ragged_batch",
                                        "false: requests of different lengths are never merged by the dynamic batcher; "
                                        "expected true (the runtime right-pads them, see pad_values)"))
    for i, warm in enumerate(config.model_warmup):
        where = f"model_warmup[{i}]"
        if mbs and not 1 <= warm.batch_size <= mbs:
            findings.append(Finding(rel, f"{where}.batch_size", f"{warm.batch_size} is outside 1..max_batch_size {mbs}"))
        for name, entry in warm.inputs.items():
            declared = inputs.get(name)
            if declared is None:
                findings.append(Finding(rel, f"{where}.inputs", f"{name!r} is not an input of the model"))
                continue
            if entry.data_type != declared.data_type:
                findings.append(Finding(rel, f"{where}.inputs[{name!r}].data_type",
                                        f"{_dtype_name(entry.data_type)} but input {name!r} is "
                                        f"{_dtype_name(declared.data_type)}"))
            dims = list(declared.dims)
            if len(entry.dims) != len(dims) or any(d != -1 and d != w for d, w in zip(dims, entry.dims)):
                findings.append(Finding(rel, f"{where}.inputs[{name!r}].dims",
                                        f"{_shape_text(entry.dims)} does not fit input {name!r} dims {_shape_text(dims)}"))
        for name in inputs:
            if name not in warm.inputs:
                findings.append(Finding(rel, f"{where}.inputs", f"input {name!r} is missing"))
    return findings


def _check_plan(config, version_dir: Path, number: str, rel: str) -> list[Finding]:
    filename = config.default_model_filename or "model.plan"
    plan = version_dir / filename
    artifact = f"{number}/{filename}"
    if not plan.is_file():
        return [Finding(rel, "default_model_filename", f"{artifact} does not exist")]
    try:
        meta = read_metadata(plan)
    except UserError as exc:
        return [Finding(rel, "default_model_filename", f"{artifact}: {exc}")]
    findings = check_signature(config, meta.signature(), rel, f"{artifact} (per {metadata_path(plan).name})")
    groups = [g for g in config.instance_group if g.profile] or [None]
    for g_index, group in enumerate(groups):
        chosen = [int(p) for p in group.profile] if group is not None else None
        known = {p["index"] for p in meta.profiles}
        for p in chosen or []:
            if p not in known:
                findings.append(Finding(rel, f"instance_group[{g_index}].profile", f"profile {p} does not exist in "
                                        f"{artifact} (it has {sorted(known)})"))
        limit = meta.max_batch(chosen)
        if config.max_batch_size > limit:
            findings.append(Finding(rel, "max_batch_size", f"{config.max_batch_size} exceeds the TensorRT profile "
                                    f"maximum {limit}"))
    for i, warm in enumerate(config.model_warmup):
        fits = False
        for profile in meta.profiles:
            ok = True
            for name, entry in warm.inputs.items():
                r = profile["inputs"].get(name)
                shape = [warm.batch_size] + list(entry.dims)
                if r is None or len(shape) != len(r["min"]) or any(
                        not lo <= s <= hi for s, lo, hi in zip(shape, r["min"], r["max"])):
                    ok = False
            fits = fits or ok
        if not fits:
            findings.append(Finding(rel, f"model_warmup[{i}]", f"shapes of {warm.name!r} fit no optimization profile of {artifact}"))
    return findings


def _tokenizer_max_length(path: Path) -> int | None:
    try:
        truncation = json.loads(path.read_text(encoding="utf-8")).get("truncation") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return truncation.get("max_length")


def _model_max_length(config, input_name: str) -> int | None:
    """The longest sequence a python-backend model accepts for ``input_name`` (its ``max_dims`` parameter)."""
    if "max_dims" not in config.parameters:
        return None
    try:
        dims = json.loads(config.parameters["max_dims"].string_value).get(input_name)
    except (ValueError, AttributeError):
        return None
    return dims[-1] if dims else None


def _check_helper(config, version_dir: Path, number: str, rel: str, params: dict) -> list[Finding]:
    """The builders' tokenizer and labels models against their own files."""
    findings = []
    if "labels_file" in params and (version_dir / params["labels_file"]).is_file():
        path = version_dir / params["labels_file"]
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(labels, list):
                raise ValueError("expected a JSON list of class names")
        except ValueError as exc:
            return [Finding(rel, "parameters['labels_file']", f"{number}/{params['labels_file']} is not a list of "
                            f"labels ({exc})")]
        for i, tensor in enumerate(config.input):
            if list(tensor.dims) and tensor.dims[-1] not in (-1, len(labels)):
                findings.append(Finding(rel, f"input[{i}].dims", f"{_shape_text(tensor.dims)} but "
                                        f"{number}/{params['labels_file']} has {len(labels)} labels"))
    if "tokenizer_file" in params and (version_dir / params["tokenizer_file"]).is_file():
        if _tokenizer_max_length(version_dir / params["tokenizer_file"]) is None:
            findings.append(Finding(rel, "parameters['tokenizer_file']", f"{number}/{params['tokenizer_file']} does "
                                    "not truncate: its output would be as long as the text (expected truncation."
                                    "max_length)"))
    return findings


def _check_tokenizer_feeds(step, composing, repository: Path, steps, rel: str, where: str,
                           config_name: str | None) -> list[Finding]:
    """A tokenizer step's longest output against the maximum length of the model its ids go to."""
    params = {k: v.string_value for k, v in composing.parameters.items()}
    if "tokenizer_file" not in params:
        return []
    found = versions(repository / step.model_name)
    number = step.model_version if step.model_version > 0 else (found[-1] if found else None)
    if number is None:
        return []
    longest = _tokenizer_max_length(repository / step.model_name / str(number) / params["tokenizer_file"])
    findings = []
    for key, tensor in step.output_map.items():
        for other in steps:
            for input_name, source in other.input_map.items():
                if source != tensor or other is step:
                    continue
                path = config_path(repository / other.model_name, config_name)
                try:
                    consumer = load_config_file(path)
                except UserError:
                    continue
                limit = _model_max_length(consumer, input_name)
                if longest is not None and limit is not None and longest > limit:
                    findings.append(Finding(rel, f"{where}.output_map", f"{step.model_name!r} emits up to {longest} "
                                            f"ids ({number}/{params['tokenizer_file']} truncation.max_length) but "
                                            f"{other.model_name!r} input {input_name!r} takes at most {limit}"))
    return findings


def _check_ensemble(config, model_dir: Path, rel: str, config_name: str | None,
                    in_repository: bool = False) -> list[Finding]:
    findings = []
    repository = model_dir.parent
    produced = {t.name for t in config.input}
    if in_repository and config.version_policy.WhichOneof("policy_choice") != "specific":
        findings.append(Finding(rel, "version_policy", "not 'specific': when Triton reloads a composing model it lists "
                                "this ensemble's versions again and serves the newest with the steps it had loaded; "
                                "expected the one version whose steps this configuration names"))
    for i, step in enumerate(config.ensemble_scheduling.step):
        where = f"ensemble_scheduling.step[{i}]"
        target = repository / step.model_name
        if in_repository:
            if step.model_version < 0:
                findings.append(Finding(rel, f"{where}.model_version", f"{step.model_version} (latest of "
                                        f"{step.model_name!r}): during a rollout the answer could come from another "
                                        "version than the ensemble reports; expected the exact version"))
            elif step.model_version not in versions(target):
                findings.append(Finding(rel, f"{where}.model_version", f"{step.model_version} but {step.model_name!r} "
                                        f"has no version {step.model_version} (its versions: "
                                        f"{', '.join(map(str, versions(target))) or 'none'})"))
        path = config_path(target, config_name)
        if not path.is_file():
            findings.append(Finding(rel, f"{where}.model_name", f"{step.model_name!r} has no configuration at {path}"))
            continue
        try:
            composing = load_config_file(path)
        except UserError as exc:
            findings.append(Finding(rel, f"{where}.model_name", str(exc)))
            continue
        inputs = {t.name for t in composing.input}
        outputs = {t.name for t in composing.output}
        for key, value in step.input_map.items():
            if key not in inputs:
                findings.append(Finding(rel, f"{where}.input_map", f"{key!r} is not an input of {step.model_name!r} "
                                        f"(its inputs: {', '.join(sorted(inputs))})"))
            if value not in produced:
                findings.append(Finding(rel, f"{where}.input_map", f"tensor {value!r} is not produced by an earlier step "
                                        "or an ensemble input"))
        for key, value in step.output_map.items():
            if key not in outputs:
                findings.append(Finding(rel, f"{where}.output_map", f"{key!r} is not an output of {step.model_name!r} "
                                        f"(its outputs: {', '.join(sorted(outputs))})"))
            produced.add(value)
        findings += _check_tokenizer_feeds(step, composing, repository, config.ensemble_scheduling.step, rel, where,
                                           config_name)
        if composing.max_batch_size < config.max_batch_size:
            findings.append(Finding(rel, "max_batch_size", f"{config.max_batch_size} exceeds {step.model_name!r}'s "
                                    f"max_batch_size {composing.max_batch_size}"))
    for i, tensor in enumerate(config.output):
        if tensor.name not in produced:
            findings.append(Finding(rel, f"output[{i}].name", f"{tensor.name!r} is produced by no ensemble step"))
    return findings


def lint_model_dir(model_dir: str | Path, config_name: str | None = None, policy: bool = True,
                   version_dirs: dict[str, Path] | None = None, python_queue_policy: bool = False) -> list[Finding]:
    """All findings for the configuration Triton would read for ``model_dir`` under ``--model-config-name``.

    ``version_dirs`` replaces the numeric version folders (the builders lint a package before it is published).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is not a directory (expected a model folder of a Triton model repository)")
    path = config_path(model_dir, config_name)
    rel = str(path.relative_to(model_dir))
    if config_name and path.name == "config.pbtxt":
        return [Finding(rel, "configs", f"configs/{config_name}.pbtxt does not exist (Triton would fall back to config.pbtxt)")]
    try:
        config = load_config_file(path)
    except UserError as exc:
        return [Finding(rel, "<parse>", str(exc))]
    return _lint_config(config, rel, model_dir, config_name, policy, version_dirs, python_queue_policy)


def _lint_config(config, rel: str, model_dir: Path, config_name: str | None, policy: bool,
                 version_dirs: dict[str, Path] | None, python_queue_policy: bool) -> list[Finding]:
    findings: list[Finding] = []
    if config.name and config.name != model_dir.name:
        findings.append(Finding(rel, "name", f"{config.name!r} but the folder is {model_dir.name!r} (they must match)"))
    findings += _check_batching_and_warmup(config, rel, policy, python_queue_policy)
    if config.platform == "ensemble":
        return findings + _check_ensemble(config, model_dir, rel, config_name, in_repository=version_dirs is None)
    chosen = (list(version_dirs.items()) if version_dirs is not None
              else _selected_versions(config, model_dir, rel, findings))
    params = {k: v.string_value for k, v in config.parameters.items()}
    for number, version_dir in chosen:
        if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
            findings += _check_plan(config, version_dir, number, rel)
        elif config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
            filename = config.default_model_filename or "model.onnx"
            findings += _check_onnx(config, version_dir / filename, f"{number}/{filename}", rel, "default_model_filename")
        elif config.backend == "python":
            if not (version_dir / "model.py").is_file():
                findings.append(Finding(rel, "backend", f"python backend but {number}/model.py does not exist"))
            for key in ("tokenizer_file", "labels_file"):
                if key in params and not (version_dir / params[key]).is_file():
                    findings.append(Finding(rel, f"parameters[{key!r}]", f"{number}/{params[key]} does not exist"))
            findings += _check_helper(config, version_dir, number, rel, params)
            if "onnx_file" in params:
                findings += _check_onnx(config, version_dir / params["onnx_file"], f"{number}/{params['onnx_file']}",
                                        rel, "parameters['onnx_file']")
        else:
            findings.append(Finding(rel, "backend", f"platform {config.platform!r} / backend {config.backend!r} is not "
                                    "one the linter knows (python, onnxruntime, tensorrt, ensemble)"))
    return findings


def _check_onnx(config, path: Path, artifact: str, rel: str, field: str) -> list[Finding]:
    if not path.is_file():
        return [Finding(rel, field, f"{artifact} does not exist")]
    try:
        signature = read_signature(path)
    except UserError as exc:
        return [Finding(rel, field, str(exc))]
    return check_signature(config, signature, rel, artifact)


def lint_all(model_dir: str | Path, policy: bool = True, version_dirs: dict[str, Path] | None = None,
             python_queue_policy: bool = False) -> list[Finding]:
    """The default configuration and every ``configs/*.pbtxt`` of a model folder."""
    model_dir = Path(model_dir)
    findings = lint_model_dir(model_dir, None, policy, version_dirs, python_queue_policy)
    for path in sorted((model_dir / "configs").glob("*.pbtxt")) if (model_dir / "configs").is_dir() else []:
        findings += lint_model_dir(model_dir, path.stem, policy, version_dirs, python_queue_policy)
    if version_dirs is None:
        findings += lint_kept_versions(model_dir) + lint_family(model_dir)
    return findings


def lint_kept_versions(model_dir: Path) -> list[Finding]:
    """Every kept version (not only the serving one): files against ``lineage.json``, its config snapshot against them.

    A rollback publishes a kept version again, so a truncated file or a garbage snapshot must show up here first."""
    from builders.publication import verify_version
    from builders.repository import CONFIG_SNAPSHOT, config_files

    findings = []
    for number in versions(model_dir):
        version_dir = model_dir / str(number)
        for problem in verify_version(version_dir):
            findings.append(Finding(f"{number}/lineage.json", "files", problem))
        snapshot = version_dir / CONFIG_SNAPSHOT
        if not snapshot.is_dir():
            findings.append(Finding(f"{number}/{CONFIG_SNAPSHOT}", "<missing>", "no configuration snapshot: this "
                                    "version cannot be rolled back to"))
            continue
        for relative, path in config_files(snapshot).items():
            rel = f"{number}/{CONFIG_SNAPSHOT}/{relative}"
            try:
                config = load_config_file(path)
            except UserError as exc:
                findings.append(Finding(rel, "<parse>", str(exc)))
                continue
            if config.platform == "ensemble":
                for i, step in enumerate(config.ensemble_scheduling.step):
                    if step.model_version > 0 and step.model_version not in versions(model_dir.parent / step.model_name):
                        findings.append(Finding(rel, f"ensemble_scheduling.step[{i}].model_version",
                                                f"{step.model_version} but {step.model_name!r} no longer has it"))
                continue
            findings += _lint_config(config, rel, model_dir, None, False, {str(number): version_dir}, False)
    return findings


def lint_family(model_dir: Path) -> list[Finding]:
    """A finding when the model's family is split by an interrupted publication (see :mod:`builders.publication`)."""
    from builders.publication import RECORD_SUFFIX, inspect

    return [Finding(f"../{state.primary}{RECORD_SUFFIX}", "family", state.describe())
            for state in inspect(model_dir.parent) if state.split and model_dir.name in state.members]
