"""Lay out what one build publishes: every model of the family, its typed configs and its version files.

:func:`make_package` writes a package (see :mod:`builders.repository`) under the build folder: the classifier's
version files (``model.onnx``, the CPU runtime ``model.py``, the accepted INT8 file, the plan and its metadata), one
configuration per serving target, and for text models the tokenizer, labels and ``<name>_text`` ensemble. Before the
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


def _write_text_family(package: Package, name: str, exported, settings: BuildConfig, run_dir: Path) -> list[str]:
    """Tokenizer, labels and the ``<name>_text`` ensemble: raw strings in, labels and scores out."""
    manifest = exported.manifest
    input_ids = manifest.inputs[0].name
    num_classes = len(manifest.labels)
    tokenizer, labels, ensemble = f"{name}_tokenizer", f"{name}_labels", f"{name}_text"
    pad_id = int(manifest.preprocessing.get("pad_id", 0))
    members = {
        tokenizer: tc.tokenizer_config(tokenizer, settings, pad_id, input_ids),
        labels: tc.labels_config(labels, settings, num_classes),
        ensemble: tc.text_ensemble_config(ensemble, settings, tokenizer, name, labels, input_ids, num_classes),
    }
    for member, config in members.items():
        (package.root / member / VERSION_STAGE).mkdir(parents=True, exist_ok=True)
        atomic_write_text(package.root / member / "config.pbtxt", tc.to_text(config))
    atomic_copy(TOKENIZER_MODEL, package.version_dir(tokenizer) / "model.py")
    atomic_copy(run_dir / manifest.tokenizer.file, package.version_dir(tokenizer) / "tokenizer.json")
    atomic_copy(LABELS_MODEL, package.version_dir(labels) / "model.py")
    atomic_write_json(package.version_dir(labels) / "labels.json", list(manifest.labels))
    return [tokenizer, labels, ensemble]


def make_package(root: Path, name: str, exported, profiles: list[Profile], onnx_path: Path, int8_path: Path | None,
                 plan: dict | None, settings: BuildConfig) -> Package:
    """Write every member's configs and version files under ``root`` and lint them against their artifacts."""
    if root.exists():
        shutil.rmtree(root)
    manifest = exported.manifest
    version = root / name / VERSION_STAGE
    version.mkdir(parents=True)
    atomic_copy(onnx_path, version / "model.onnx")
    atomic_copy(ONNX_MODEL, version / "model.py")
    if int8_path is not None:
        atomic_copy(int8_path, version / "model.int8.onnx")
    if plan is not None:
        atomic_copy(Path(plan["plan"]), version / "model.plan")
        atomic_copy(Path(plan["metadata"]), version / "model.plan.json")
    configs = package_configs(name, manifest, profiles, settings, int8=int8_path is not None, plan=plan is not None)
    for relative, config in configs.items():
        atomic_write_text(root / name / relative, tc.to_text(config))
    members = [name]
    if manifest.tokenizer is not None:
        members = _write_text_family(Package(root, name, ()), name, exported, settings, exported.run_dir)
        members = [members[0], members[1], name, members[2]]
    package = Package(root, name, tuple(members))
    package.write()
    findings = lint_package(package, settings)
    if findings:
        raise UserError("generated configuration disagrees with its artifact: " + "; ".join(findings))
    return package


def package_configs(name: str, manifest, profiles: list[Profile], settings: BuildConfig, int8: bool,
                    plan: bool) -> dict:
    """``{relative path: ModelConfig}`` of a model: the CPU default (INT8 when built and ``serve_int8``), the ONNX
    Runtime backend, and the CPU INT8 / TensorRT alternatives when their artifacts exist."""
    serve_int8 = int8 and settings.quantize.serve_int8
    configs = {"config.pbtxt": tc.cpu_config(name, manifest, profiles, settings,
                                             "model.int8.onnx" if serve_int8 else "model.onnx"),
               f"configs/{tc.ONNXRUNTIME}.pbtxt": tc.onnxruntime_config(name, manifest, profiles, settings)}
    if int8:
        configs[f"configs/{tc.CPU_INT8}.pbtxt"] = tc.cpu_config(name, manifest, profiles, settings, "model.int8.onnx")
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
