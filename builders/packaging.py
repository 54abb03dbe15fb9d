"""Lay out what one build publishes: every model of the family, its typed configs and its version files.

:func:`make_package` writes a package (see :mod:`builders.repository`) under the build folder: the classifier's
version files (``model.onnx``, the CPU runtime ``model.py``, the accepted INT8 file, the plan and its metadata), one
configuration per serving target, and for text models the tokenizer, (for classifiers) the labels, and the
``<name>_text`` ensemble that takes raw strings. Before the
package can be published, every member is linted against its own artifacts: a generated config that disagrees with the
file it serves is a bug that stops the build.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import UserError
from common.files import atomic_copy, atomic_write_json, atomic_write_text
from builders import triton_configs as tc
from builders.lint import lint_all
from builders.repository import VERSION_STAGE, Package
from builders.runtime import LABELS_MODEL, ONNX_MODEL, TOKENIZER_MODEL
from builders.settings import BuildConfig
from builders.shapes import Profile


def text_inputs(source) -> list[str]:
    """The model inputs the served tokenizer step produces, or [] when the model is not a text model it can feed."""
    from builders.sources.heldout import ENCODING_FIELDS

    names = source.signature.input_names
    if source.tokenizer_file is None or not all(n in ENCODING_FIELDS for n in names):
        return []
    return names


def _write_text_family(package: Package, name: str, source, settings: BuildConfig) -> list[str]:
    """Tokenizer, labels (classifiers) and the ``<name>_text`` ensemble: raw strings in, the model's answer out."""
    signature = source.signature
    pre = signature.preprocessing
    inputs = [t for t in signature.inputs]
    tokenizer, labels, ensemble = f"{name}_tokenizer", f"{name}_labels", f"{name}_text"
    classification = signature.task == "classification"
    members = {tokenizer: tc.tokenizer_config(tokenizer, settings, pre.pad_id, inputs, pre.max_length,
                                              pre.pad_values)}
    if classification:
        members[labels] = tc.labels_config(labels, settings, len(signature.labels))
        members[ensemble] = tc.text_ensemble_config(ensemble, settings, tokenizer, name, labels,
                                                    [t.name for t in inputs], len(signature.labels))
    else:
        members[ensemble] = tc.text_passthrough_ensemble_config(ensemble, settings, tokenizer, name,
                                                                [t.name for t in inputs], list(signature.outputs))
    for member, config in members.items():
        (package.root / member / VERSION_STAGE).mkdir(parents=True, exist_ok=True)
        atomic_write_text(package.root / member / "config.pbtxt", tc.to_text(config))
    atomic_copy(TOKENIZER_MODEL, package.version_dir(tokenizer) / "model.py")
    atomic_copy(source.tokenizer_file, package.version_dir(tokenizer) / "tokenizer.json")
    if classification:
        atomic_copy(LABELS_MODEL, package.version_dir(labels) / "model.py")
        atomic_write_json(package.version_dir(labels) / "labels.json", list(signature.labels))
        return [tokenizer, labels, ensemble]
    return [tokenizer, ensemble]


def make_package(root: Path, name: str, source, profiles: list[Profile], onnx_path: Path, int8_path: Path | None,
                 plan: dict | None, settings: BuildConfig) -> Package:
    """Write every member's configs and version files under ``root`` and lint them against their artifacts."""
    if root.exists():
        shutil.rmtree(root)
    manifest = source.serving_view()
    version = root / name / VERSION_STAGE
    version.mkdir(parents=True)
    atomic_copy(onnx_path, version / "model.onnx")
    atomic_copy(ONNX_MODEL, version / "model.py")
    if int8_path is not None:
        atomic_copy(int8_path, version / "model.int8.onnx")
    if plan is not None:
        atomic_copy(Path(plan["plan"]), version / "model.plan")
        atomic_copy(Path(plan["metadata"]), version / "model.plan.json")
    vocab = tc.tokenizer_vocab_size(source.tokenizer_file) if source.tokenizer_file else None
    configs = package_configs(name, manifest, profiles, settings, int8=int8_path is not None, plan=plan is not None,
                              vocab_size=vocab)
    for relative, config in configs.items():
        atomic_write_text(root / name / relative, tc.to_text(config))
    members = [name]
    if text_inputs(source):
        family = _write_text_family(Package(root, name, ()), name, source, settings)
        members = [*family[:-1], name, family[-1]]  # steps before the model, the model, then the ensemble
    package = Package(root, name, tuple(members))
    package.write()
    findings = lint_package(package, settings)
    if findings:
        raise UserError("generated configuration disagrees with its artifact: " + "; ".join(findings))
    return package


def package_configs(name: str, manifest, profiles: list[Profile], settings: BuildConfig, int8: bool,
                    plan: bool, vocab_size: int | None = None) -> dict:
    """``{relative path: ModelConfig}`` of a model: the CPU default (INT8 when built and ``serve_int8``), the ONNX
    Runtime backend, and the CPU INT8 / TensorRT alternatives when their artifacts exist."""
    serve_int8 = int8 and settings.quantize.serve_int8
    configs = {"config.pbtxt": tc.cpu_config(name, manifest, profiles, settings,
                                             "model.int8.onnx" if serve_int8 else "model.onnx", vocab_size),
               f"configs/{tc.ONNXRUNTIME}.pbtxt": tc.onnxruntime_config(name, manifest, profiles, settings)}
    if int8:
        configs[f"configs/{tc.CPU_INT8}.pbtxt"] = tc.cpu_config(name, manifest, profiles, settings, "model.int8.onnx",
                                                                vocab_size)
    if plan:
        configs[f"configs/{tc.TENSORRT}.pbtxt"] = tc.tensorrt_config(name, manifest, profiles, settings)
    return configs


def lint_package(package: Package, settings: BuildConfig) -> list[str]:
    """Every member's configs against its staged artifacts, as ``member/finding`` lines (empty when all agree)."""
    findings = []
    for member in package.members:
        findings += [f"{member}/{f}" for f in lint_all(package.model_dir(member),
                                                       version_dirs={VERSION_STAGE: package.version_dir(member)},
                                                       python_queue_policy=settings.cpu_runtime.queue_policy)]
    return findings
