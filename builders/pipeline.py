"""The whole build: training run → ONNX (+ INT8, + TensorRT) → configs → gate → new version in the repository.

``python -m builders build --run-dir runs/digits --repository model_repository`` runs these steps in order, each
recorded in ``BUILD_DIR/status.json`` (:mod:`builders.steps`):

1. **load**      manifest.json + model.safetensors → the PyTorch model (hashes and architecture verified);
2. **export**    ONNX with the manifest's names and dynamic axes, ``onnx.checker``, onnxslim (kept only if parity
                 holds), parity against PyTorch on held-out inputs — a parity failure stops here (gate failure);
3. **evaluate**  held-out accuracy of the candidate and of the serving version, both by ONNX Runtime;
4. **quantize**  INT8 dynamic quantization: size, latency, accuracy vs FP32; refused beyond the margin;
5. **tensorrt**  plan + metadata + parity vs ONNX Runtime (GPU hosts with TensorRT; skipped elsewhere, saying why);
6. **package**   version files and typed configs for every target, linted against the artifacts;
7. **gate**      parity and accuracy vs the serving version; a failure publishes nothing (exit status 3);
8. **publish**   version N+1 in one rename per model, last K kept, lineage.json inside;
9. **rollout**   with ``--triton-url``: Triton loads N+1 while serving N; a version that fails to load is retracted.

Nothing in the repository changes before step 8, so any failure before it leaves the repository exactly as it was.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.files import atomic_copy, atomic_write_json, sha256_file
from common.manifest import MANIFEST_NAME
from builders import gate as gate_mod
from builders.environment import build_environment
from builders.onnx_export import OnnxFile, export, simplify
from builders.packaging import make_package
from builders.parity import ParityReport, compare
from builders.report import plot_report
from builders.repository import MODEL_NAME, Package, prune_package, publish_package, retract, write_lineage
from builders.runners import accuracy, heldout_batches, ort_runner, ort_session, torch_runner
from builders.settings import BuildConfig
from builders.shapes import derive_profiles
from builders.steps import Skipped, StepRunner

STEPS = ["load", "export", "evaluate", "quantize", "tensorrt", "package", "gate", "publish", "rollout"]


@dataclass
class BuildRequest:
    run_dir: Path
    repository: Path
    settings: BuildConfig = field(default_factory=BuildConfig)
    config_file: Path | None = None
    name: str | None = None
    publish: bool = True
    triton_url: str | None = None
    quiet: bool = False
    force: bool = False  # rebuild even when the serving version already has these weights and settings
    overrides: list[str] = field(default_factory=list)  # command-line settings overrides (--keep, --tensorrt, …)

    def command(self) -> list[str]:
        """The ``python -m builders build`` arguments that repeat this build."""
        args = ["build", "--run-dir", str(self.run_dir.resolve()), "--repository", str(self.repository.resolve())]
        if self.config_file:
            args += ["--config", str(Path(self.config_file).resolve())]
        if self.name:
            args += ["--name", self.name]
        if self.triton_url:
            args += ["--triton-url", self.triton_url]
        if not self.publish:
            args.append("--no-publish")
        if self.force:
            args.append("--force")
        return args + list(self.overrides)

    def config_args(self) -> list[str]:
        """Arguments that make a step command use the same settings as this build."""
        return (["--config", str(Path(self.config_file).resolve())] if self.config_file else []) + list(self.overrides)


@dataclass
class ExportResult:
    onnx: OnnxFile
    parity: ParityReport
    simplify: dict

    def summary(self) -> str:
        return self.parity.summary()


def export_and_verify(exported, splits, out_dir: Path, settings: BuildConfig, say=lambda text: None) -> ExportResult:
    """Export, check, simplify when parity allows, and compare with PyTorch; a parity failure is a gate failure."""
    from common.errors import GateFailure

    out_dir.mkdir(parents=True, exist_ok=True)
    names_in = [t.name for t in exported.manifest.inputs]
    names_out = [t.name for t in exported.manifest.outputs]
    reference = torch_runner(exported.model)
    parity_cfg = settings.parity

    def parity_of(onnx_file: OnnxFile) -> ParityReport:
        runner = ort_runner(ort_session(onnx_file.path), names_in, names_out)
        return compare(reference, runner, heldout_batches(exported.spec, splits.test, parity_cfg.batch_size,
                                                          parity_cfg.samples),
                       names_out, parity_cfg.tolerance, parity_cfg.min_argmax_agreement, "pytorch",
                       f"onnxruntime:{onnx_file.path.name}")

    raw = export(exported, out_dir / "model.raw.onnx", settings.export)
    raw_parity = parity_of(raw)
    chosen, chosen_parity = raw, raw_parity
    note: dict[str, Any] = {"attempted": settings.export.simplify, "kept": False, "nodes_before": raw.nodes}
    if settings.export.simplify:
        try:
            slim = simplify(raw, out_dir / "model.slim.onnx", settings.export.max_ir_version)
            slim_parity = parity_of(slim)
            note["nodes_after"] = slim.nodes
            if slim_parity.passed:
                chosen, chosen_parity = slim, slim_parity
                note["kept"] = True
                note["reason"] = "parity holds after simplification"
            else:
                note["reason"] = "simplified graph failed parity: " + "; ".join(slim_parity.failures())
        except UserError as exc:
            note["reason"] = str(exc)
    final = out_dir / "model.onnx"
    atomic_copy(chosen.path, final)
    chosen = OnnxFile(final, chosen.opset, chosen.ir_version, chosen.simplified, chosen.nodes, chosen.sha256,
                      chosen.size_bytes)
    result = ExportResult(chosen, chosen_parity, note)
    atomic_write_json(out_dir / "parity.json", {"parity": chosen_parity.to_dict(), "simplify": note,
                                                "onnx": chosen.to_dict()})
    if not chosen_parity.passed:
        raise GateFailure(f"ONNX export of {exported.manifest.model!r} does not match PyTorch: "
                          + "; ".join(chosen_parity.failures()) + f" (report: {out_dir / 'parity.json'})")
    return result


@dataclass
class Evaluation:
    accuracy: float
    baseline: gate_mod.ServingBaseline | None
    heldout: dict

    def summary(self) -> str:
        return f"held-out accuracy {self.accuracy:.4f} on {self.heldout['samples']} samples"


def heldout_identity(exported, splits) -> dict:
    tokenizer = exported.manifest.tokenizer
    return {"split": "test", "samples": len(splits.test), "data_version": exported.manifest.data_version,
            "tokenizer_sha256": tokenizer.sha256 if tokenizer else None}


def _timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _tensorrt_step(request: BuildRequest, exported, splits, onnx_path: Path, profiles, out_dir: Path):
    trt = request.settings.tensorrt
    if trt.mode == "off":
        raise Skipped("tensorrt.mode is off")
    from builders import tensorrt_build

    missing = tensorrt_build.unavailable_reason()
    if missing:
        if trt.mode == "required":
            raise UserError(f"tensorrt.mode is 'required' but {missing}")
        raise Skipped(missing)
    return tensorrt_build.build_optional(exported, splits, onnx_path, profiles, request.settings, out_dir)


def _artifact_settings(config: dict | None) -> dict:
    """Build settings that shape what is published (``publish`` only says where builds go and what is kept)."""
    return {key: value for key, value in (config or {}).items() if key != "publish"}


def already_serving(model_dir: Path, manifest, settings: BuildConfig) -> int | None:
    """The serving version when it was built from these exact weights (and tokenizer) with these exact settings.

    Re-running a build (``make demo`` twice, a restarted ``watch``) then publishes nothing instead of a copy.
    """
    from builders.repository import read_lineage, serving_version

    number = serving_version(model_dir)
    if number is None:
        return None
    lineage = read_lineage(model_dir / str(number))
    checkpoint = lineage.get("checkpoint", {})
    same_weights = checkpoint.get("weights_sha256") == manifest.weights.sha256
    same_tokenizer = checkpoint.get("tokenizer_sha256") == (manifest.tokenizer.sha256 if manifest.tokenizer else None)
    same_settings = _artifact_settings(lineage.get("build_config")) == _artifact_settings(settings.model_dump(mode="json"))
    return number if same_weights and same_tokenizer and same_settings and not lineage.get("rollback_of") else None


def build(request: BuildRequest) -> dict:
    """Run the pipeline; returns the report (also written to ``BUILD_DIR/report.json``)."""
    settings = request.settings
    run_dir, repository = Path(request.run_dir), Path(request.repository)
    from training.export import load_exported  # heavy import (torch): only when building

    name_hint = request.name or _peek_model_name(run_dir)
    if not MODEL_NAME.match(name_hint):
        raise UserError(f"--name {name_hint!r} is not a valid Triton model name (letters, digits, '_', '-', '.')")
    build_id = _timestamp()
    build_dir = Path(settings.publish.work_dir) / name_hint / build_id
    steps = StepRunner(build_dir, list(STEPS), quiet=request.quiet)
    full = request.command()
    report: dict[str, Any] = {"model": name_hint, "build_id": build_id, "build_dir": str(build_dir),
                              "run_dir": str(run_dir), "repository": str(repository)}

    def finish() -> None:
        report["steps"] = steps.summary()
        atomic_write_json(build_dir / "report.json", report)

    try:
        export_cmd = ["export", "--run-dir", str(run_dir.resolve()), "--output", str((build_dir / "export").resolve()),
                      *request.config_args()]
        exported, splits, profiles = steps.run("load", lambda: _load(load_exported, run_dir, settings), full)
        manifest = exported.manifest
        name = request.name or manifest.model
        report["checkpoint"] = {"run_dir": str(run_dir.resolve()), "manifest_sha256": sha256_file(run_dir / MANIFEST_NAME),
                                "weights_sha256": manifest.weights.sha256,
                                "tokenizer_sha256": manifest.tokenizer.sha256 if manifest.tokenizer else None,
                                "parent_checkpoint": manifest.parent_checkpoint.model_dump() if manifest.parent_checkpoint else None,
                                "metrics": manifest.metrics, "data_version": manifest.data_version,
                                "code_version": manifest.code_version, "created_at": manifest.created_at}
        report["profiles"] = [p.to_dict() for p in profiles]
        same = None if request.force or not request.publish else already_serving(repository / name, manifest, settings)
        if same is not None:
            report["unchanged"] = {"version": same, "model_dir": str(repository / name)}
            return report

        exp = steps.run("export", lambda: export_and_verify(exported, splits, build_dir / "export", settings), export_cmd)
        report["onnx"], report["parity"], report["simplify"] = exp.onnx.to_dict(), exp.parity.to_dict(), exp.simplify

        def evaluate() -> Evaluation:
            names_in = [t.name for t in manifest.inputs]
            names_out = [t.name for t in manifest.outputs]
            runner = ort_runner(ort_session(exp.onnx.path), names_in, names_out)
            value = accuracy(runner, heldout_batches(exported.spec, splits.test, settings.parity.batch_size))
            heldout = heldout_identity(exported, splits)
            heldout["accuracy"] = round(value, 6)
            baseline = gate_mod.serving_baseline(repository / name, exported, splits, heldout, settings.parity.batch_size)
            return Evaluation(value, baseline, heldout)

        evaluation = steps.run("evaluate", evaluate, full)
        report["accuracy"] = round(evaluation.accuracy, 6)
        report["heldout"] = evaluation.heldout

        def quantize_step():
            if not settings.quantize.enabled:
                raise Skipped("quantize.enabled is false")
            from builders.quantize import build_int8

            return build_int8(exported, splits, exp.onnx.path, build_dir / "export" / "model.int8.onnx",
                              settings.quantize, settings.parity.batch_size, evaluation.accuracy)

        quant = steps.run("quantize", quantize_step,
                          ["quantize", "--run-dir", str(run_dir.resolve()), "--onnx", str(exp.onnx.path.resolve()),
                           "--output", str((build_dir / "quantize").resolve()), *request.config_args()])
        report["int8"] = quant.to_dict() if quant else None

        plan = steps.run("tensorrt", lambda: _tensorrt_step(request, exported, splits, exp.onnx.path, profiles,
                                                            build_dir / "tensorrt"),
                         ["tensorrt", "--run-dir", str(run_dir.resolve()), "--onnx", str(exp.onnx.path.resolve()),
                          "--output", str((build_dir / "tensorrt").resolve()), *request.config_args()])
        report["tensorrt"] = plan.to_dict() if plan else {"skipped": steps.records["tensorrt"].detail}

        int8_path = exp.onnx.path.with_name("model.int8.onnx") if quant and quant.accepted else None
        package = steps.run("package", lambda: make_package(build_dir / "package", name, exported, profiles,
                                                            exp.onnx.path, int8_path,
                                                            plan.files() if plan else None, settings), full)
        report["package"] = {"root": str(package.root), "members": list(package.members)}

        decision = steps.run("gate", lambda: _gate(exp, evaluation, settings, name), full)
        report["gate"] = decision.to_dict()

        lineage = {
            "format_version": 1, "model": name,
            "family": {"primary": name, "members": list(package.members)},
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "build_id": build_id,
            "checkpoint": report["checkpoint"], "onnx": report["onnx"], "int8": report["int8"],
            "plan": report["tensorrt"] if plan else None, "parity": report["parity"],
            "simplify": report["simplify"], "heldout": evaluation.heldout, "gate": report["gate"],
            "environment": build_environment(), "build_config": settings.model_dump(mode="json"),
            "rollback_of": None,
        }
        write_lineage(package, lineage)

        def publish_step():
            if not request.publish:
                raise Skipped("--no-publish: package left in " + str(package.root))
            return publish_package(package, repository)

        published = steps.run("publish", publish_step, full)
        if published:
            report["published"] = {"version": published.version, "previous": published.previous,
                                   "path": str(repository / name / str(published.version))}

        def rollout_step():
            if not published or not request.triton_url:
                raise Skipped("no --triton-url given" if published else "nothing was published")
            roll_out(request.triton_url, package, repository, published.version, settings, build_dir)
            return None

        steps.run("rollout", rollout_step, ["publish", "--package", str(package.root.resolve()), "--repository",
                                            str(repository.resolve()), "--triton-url", str(request.triton_url)])
        report["rollout"] = steps.records["rollout"].__dict__
        if published:  # only now: a failed rollout above restores the previous version, which must still exist
            report["published"]["pruned"] = prune_package(package, repository, settings.publish.keep_versions)
    finally:
        finish()
    try:
        plot_report(report, build_dir / "report.png")
        report["plot"] = str(build_dir / "report.png")
    except Exception as exc:  # a plot must never fail a published build
        report["plot_error"] = str(exc)
    finish()
    return report


def _peek_model_name(run_dir: Path) -> str:
    from common.manifest import read_manifest

    return read_manifest(run_dir, verify=False).model


def _load(load_exported, run_dir: Path, settings: BuildConfig):
    """The model, its held-out data and its optimization profiles (a shape declaration that does not fit fails here)."""
    exported = load_exported(run_dir)
    profiles = derive_profiles(exported.manifest.inputs, exported.manifest.preprocessing, settings)
    return exported, exported.load_splits(), profiles


def _gate(exp: ExportResult, evaluation: Evaluation, settings: BuildConfig, name: str):
    decision = gate_mod.decide(exp.parity.passed, exp.parity.failures(), evaluation.accuracy, evaluation.baseline,
                               settings.gate.max_accuracy_drop)
    gate_mod.enforce(decision, name)
    return decision


def roll_out(url: str, package: Package, repository: Path, version: int, settings: BuildConfig, build_dir: Path) -> None:
    """Load the published version on a live Triton; retract it from disk if Triton cannot load it."""
    from builders.rollout import load_published, resync

    try:
        load_published(url, package.members, package.primary, version, settings.publish.load_timeout_s)
    except UserError as exc:
        retract(repository, package, version, build_dir / "retracted")
        resync(url, package.members, settings.publish.load_timeout_s)
        raise UserError(f"{exc}; version {version} was retracted from {repository} (kept in {build_dir / 'retracted'}) "
                        "and the previous version keeps serving") from None
