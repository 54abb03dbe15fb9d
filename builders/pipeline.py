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
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.files import atomic_copy, atomic_write_json, atomic_write_text, sha256_file
from common.manifest import MANIFEST_NAME
from builders import gate as gate_mod
from builders import triton_configs as tc
from builders.environment import build_environment
from builders.lint import lint_all
from builders.onnx_export import OnnxFile, export, simplify
from builders.parity import ParityReport, compare
from builders.repository import Package, VERSION_STAGE, publish_package, retract, write_lineage
from builders.runners import accuracy, heldout_batches, ort_runner, ort_session, torch_runner
from builders.runtime import LABELS_MODEL, ONNX_MODEL, TOKENIZER_MODEL
from builders.settings import BuildConfig
from builders.shapes import Profile, derive_profiles
from builders.steps import Skipped, StepRunner

STEPS = ["load", "export", "evaluate", "quantize", "tensorrt", "package", "gate", "publish", "rollout"]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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
    serve_int8 = int8_path is not None and settings.quantize.serve_int8
    configs = {"config.pbtxt": tc.cpu_config(name, manifest, profiles, settings,
                                             "model.int8.onnx" if serve_int8 else "model.onnx"),
               f"configs/{tc.ONNXRUNTIME}.pbtxt": tc.onnxruntime_config(name, manifest, profiles, settings)}
    if int8_path is not None:
        atomic_copy(int8_path, version / "model.int8.onnx")
        configs[f"configs/{tc.CPU_INT8}.pbtxt"] = tc.cpu_config(name, manifest, profiles, settings, "model.int8.onnx")
    if plan is not None:
        atomic_copy(Path(plan["plan"]), version / "model.plan")
        atomic_copy(Path(plan["metadata"]), version / "model.plan.json")
        configs[f"configs/{tc.TENSORRT}.pbtxt"] = tc.tensorrt_config(name, manifest, profiles, settings)
    for relative, config in configs.items():
        atomic_write_text(root / name / relative, tc.to_text(config))
    members = [name]
    if manifest.tokenizer is not None:
        members = _write_text_family(Package(root, name, ()), name, exported, settings, exported.run_dir)
        members = [members[0], members[1], name, members[2]]
    package = Package(root, name, tuple(members))
    package.write()
    findings = []
    for member in package.members:
        findings += [f"{member}/{f}" for f in lint_all(root / member, version_dirs={VERSION_STAGE: package.version_dir(member)})]
    if findings:
        raise UserError("generated configuration disagrees with its artifact: " + "; ".join(map(str, findings)))
    return package


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int8 = report.get("int8") or {}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    names, sizes, lat = ["FP32"], [report["onnx"]["size_bytes"] / 1e6], [int8.get("fp32_latency", {}).get("p50_ms", 0)]
    accs = {"FP32": report["accuracy"]}
    if int8:
        names.append("INT8" + ("" if int8["accepted"] else " (refused)"))
        sizes.append(int8["int8_size_bytes"] / 1e6)
        lat.append(int8["int8_latency"]["p50_ms"])
        accs[names[-1]] = int8["int8_accuracy"]
    baseline = (report.get("gate") or {}).get("baseline")
    if baseline and baseline.get("accuracy") is not None:
        accs[f"serving v{baseline['version']}"] = baseline["accuracy"]
    axes[0].bar(names, sizes, color=["#4c72b0", "#dd8452"][:len(names)])
    axes[0].set_title("ONNX file size (MB)")
    if int8:
        axes[1].bar(names, lat, color=["#4c72b0", "#dd8452"][:len(names)])
        axes[1].set_title(f"ORT latency p50 (ms), batch {int8['fp32_latency']['batch_size']}")
    else:
        axes[1].text(0.5, 0.5, "INT8 not built", ha="center", va="center")
        axes[1].set_axis_off()
    axes[2].bar(list(accs), list(accs.values()), color="#55a868")
    low = min(accs.values())
    axes[2].set_ylim(max(0.0, low - 0.05), 1.0)
    axes[2].set_title("held-out accuracy")
    outputs = report["parity"]["outputs"]
    axes[3].bar([o["name"] for o in outputs], [max(o["max_abs_error"], 1e-12) for o in outputs], color="#8172b2")
    for i, o in enumerate(outputs):
        axes[3].plot([i - 0.4, i + 0.4], [o["atol"], o["atol"]], color="red", linestyle="--")
    axes[3].set_yscale("log")
    axes[3].set_title("max |ONNX - PyTorch| (red: atol)")
    fig.suptitle(f"{report['model']}: build {report['build_id']}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


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
    return tensorrt_build.build_and_verify(exported, splits, onnx_path, profiles, request.settings, out_dir)


def build(request: BuildRequest) -> dict:
    """Run the pipeline; returns the report (also written to ``BUILD_DIR/report.json``)."""
    settings = request.settings
    run_dir, repository = Path(request.run_dir), Path(request.repository)
    from training.export import load_exported  # heavy import (torch): only when building

    name_hint = request.name or _peek_model_name(run_dir)
    if not _NAME.match(name_hint):
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
        exported, splits = steps.run("load", lambda: _load(load_exported, run_dir), export_cmd)
        manifest = exported.manifest
        name = request.name or manifest.model
        report["checkpoint"] = {"run_dir": str(run_dir.resolve()), "manifest_sha256": sha256_file(run_dir / MANIFEST_NAME),
                                "weights_sha256": manifest.weights.sha256,
                                "tokenizer_sha256": manifest.tokenizer.sha256 if manifest.tokenizer else None,
                                "parent_checkpoint": manifest.parent_checkpoint.model_dump() if manifest.parent_checkpoint else None,
                                "metrics": manifest.metrics, "data_version": manifest.data_version,
                                "code_version": manifest.code_version, "created_at": manifest.created_at}
        profiles = derive_profiles(manifest.inputs, manifest.preprocessing, settings)
        report["profiles"] = [p.to_dict() for p in profiles]

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
            return publish_package(package, repository, settings.publish.keep_versions)

        published = steps.run("publish", publish_step, full)
        if published:
            report["published"] = {"version": published.version, "previous": published.previous,
                                   "pruned": published.pruned, "path": str(repository / name / str(published.version))}

        def rollout_step():
            if not published or not request.triton_url:
                raise Skipped("no --triton-url given" if published else "nothing was published")
            roll_out(request.triton_url, package, repository, published.version, settings, build_dir)
            return None

        steps.run("rollout", rollout_step, ["publish", "--package", str(package.root.resolve()), "--repository",
                                            str(repository.resolve()), "--triton-url", str(request.triton_url)])
        report["rollout"] = steps.records["rollout"].__dict__
    finally:
        finish()
    try:
        _plot(report, build_dir / "report.png")
        report["plot"] = str(build_dir / "report.png")
    except Exception as exc:  # a plot must never fail a published build
        report["plot_error"] = str(exc)
    finish()
    return report


def _peek_model_name(run_dir: Path) -> str:
    from common.manifest import read_manifest

    return read_manifest(run_dir, verify=False).model


def _load(load_exported, run_dir: Path):
    exported = load_exported(run_dir)
    return exported, exported.load_splits()


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


def summary_lines(report: dict) -> list[str]:
    """The compact human summary printed after a build."""
    lines = [f"{report['model']}: built from {report['run_dir']} (weights {report.get('checkpoint', {}).get('weights_sha256', '?')[:12]})"]
    if "onnx" in report:
        o, s = report["onnx"], report["simplify"]
        simp = (f"onnxslim {s['nodes_before']} → {s.get('nodes_after')} nodes" if s.get("kept")
                else f"not simplified ({s.get('reason', 'disabled')})")
        lines.append(f"  onnx      opset {o['opset']}, IR {o['ir_version']}, {o['size_bytes'] / 1e6:.2f} MB, {simp}")
    if "parity" in report:
        p = report["parity"]
        errs = ", ".join(f"{x['name']} max|Δ| {x['max_abs_error']:.1e} (atol {x['atol']:g})" for x in p["outputs"])
        lines.append(f"  parity    {'PASS' if p['passed'] else 'FAIL'} vs PyTorch on {p['samples']} held-out samples: "
                     f"{errs}; argmax agreement {p['argmax_agreement']:.2%}")
    if "accuracy" in report:
        lines.append(f"  accuracy  {report['accuracy']:.4f} on the held-out split (ONNX Runtime, FP32)")
    if report.get("int8"):
        q = report["int8"]
        ratio = q["fp32_size_bytes"] / max(q["int8_size_bytes"], 1)
        speed = q["fp32_latency"]["p50_ms"] / max(q["int8_latency"]["p50_ms"], 1e-9)
        lines.append(f"  int8      {'accepted' if q['accepted'] else 'REFUSED'}: {q['int8_size_bytes'] / 1e6:.2f} MB "
                     f"({ratio:.1f}x smaller), {speed:.2f}x FP32 speed, accuracy {q['int8_accuracy']:.4f} "
                     f"({-q['accuracy_drop']:+.4f}, margin {q['max_accuracy_drop']})")
    if "tensorrt" in report:
        t = report["tensorrt"]
        lines.append("  tensorrt  " + (f"skipped: {t['skipped']}" if "skipped" in t else
                                       f"{t['precision']} plan for {t['gpu_name']}, parity "
                                       f"{'PASS' if t['parity']['passed'] else 'FAIL'}"))
    if "gate" in report:
        g = report["gate"]
        b = g.get("baseline")
        against = ("no serving version yet" if not b else
                   f"serving v{b['version']} {b['accuracy']:.4f}" if b.get("accuracy") is not None else f"serving v{b['version']} (no accuracy)")
        lines.append(f"  gate      {'PASS' if g['passed'] else 'FAIL'}: accuracy {g['candidate_accuracy']:.4f} vs {against} "
                     f"(margin {g['max_accuracy_drop']})")
    if "published" in report:
        pub = report["published"]
        lines.append(f"  published {pub['path']} (previous: {pub['previous'] or 'none'}; members: "
                     f"{', '.join(report['package']['members'])})")
    rollout = report.get("rollout")
    if rollout and rollout.get("status") == "ok":
        lines.append(f"  rollout   Triton loaded version {report['published']['version']}")
    failed = [s for s in report.get("steps", []) if s["status"] == "failed"]
    for step in failed:
        lines.append(f"  FAILED    {step['name']}: {step['detail']}")
    lines.append(f"  report    {report['build_dir']}/report.json" + (" (+ report.png)" if report.get("plot") else ""))
    return lines
