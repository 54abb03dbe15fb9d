"""The whole build: model source → ONNX (+ INT8, + TensorRT) → configs → gate → new version in the repository.

``python -m builders build SOURCE --repository model_repository`` runs these steps in order, each recorded in
``BUILD_DIR/status.json`` (:mod:`builders.steps`). SOURCE is one of (:mod:`builders.sources`):
``--run-dir RUN`` (a training run), ``--hf-dir DIR --task embedding|classification`` (a Hugging Face folder),
``--onnx FILE --signature S.toml`` (an ONNX file exported elsewhere), ``--factory pkg.mod:fn --weights W.safetensors
--signature S.toml`` (any nn.Module); ``--heldout FILE.jsonl|.npz`` gives held-out data (otherwise the source's own
split, or inputs generated from the signature, and then accuracy gating is off).

1. **load**      open the source: signature, task, labels, preprocessing, held-out data (hashes verified);
2. **export**    ONNX with the signature's names and dynamic axes (skipped for an ONNX source), ``onnx.checker``,
                 onnxslim (kept only if parity holds), parity against PyTorch (or the given file) judged by the
                 task — a parity failure stops here (gate failure);
3. **evaluate**  the task's held-out quality (accuracy; recall@1 on pairs for embeddings) of the candidate and of
                 the serving version, both by ONNX Runtime; for embeddings with sentence-transformers, the cosine
                 to its ``encode`` (the external reference);
4. **quantize**  INT8 dynamic quantization: size, latency, quality vs FP32 by task; refused beyond the margin;
5. **tensorrt**  plan + metadata + parity vs ONNX Runtime (GPU hosts with TensorRT; skipped elsewhere, saying why);
6. **package**   version files and typed configs for every target (+ ``<name>_text`` for text models), linted;
7. **gate**      parity, the external reference and quality vs the serving version; a failure publishes nothing
                 (exit status 3);
8. **publish**   version N+1 in one rename per model, last K kept, lineage.json inside;
9. **rollout**   with ``--triton-url``: Triton loads N+1 while serving N; a version that fails to load is retracted.

Nothing in the repository changes before step 8, so any failure before it leaves the repository exactly as it was.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import GateFailure, UserError
from common.files import atomic_copy, atomic_write_json
from builders import gate as gate_mod
from builders.environment import build_environment
from builders.metrics import Quality, first_outputs, quality
from builders.onnx_export import OnnxFile, adopt, export, simplify
from builders.packaging import make_package
from builders.parity import ParityReport, compare, cosines
from builders.report import plot_report
from builders.repository import MODEL_NAME, Package, prune_package, publish_package, retract, write_lineage
from builders.runners import Runner, memoized, ort_runner, ort_session, torch_runner
from builders.settings import BuildConfig
from builders.shapes import derive_profiles
from builders.sources import SourceSpec, open_source
from builders.steps import Skipped, StepRunner

STEPS = ["load", "export", "evaluate", "quantize", "tensorrt", "package", "gate", "publish", "rollout"]


@dataclass
class BuildRequest:
    run_dir: Path | None = None
    repository: Path = Path("model_repository")
    settings: BuildConfig = field(default_factory=BuildConfig)
    config_file: Path | None = None
    name: str | None = None
    publish: bool = True
    triton_url: str | None = None
    quiet: bool = False
    force: bool = False  # rebuild even when the serving version already has these weights and settings
    overrides: list[str] = field(default_factory=list)  # command-line settings overrides (--keep, --tensorrt, …)
    # the other kinds of model source (exactly one of run_dir, hf_dir, onnx, factory), see builders.sources
    hf_dir: Path | None = None
    onnx: Path | None = None
    factory: str | None = None
    weights: Path | None = None
    signature: Path | None = None
    task: str | None = None
    heldout: Path | None = None

    def source(self) -> SourceSpec:
        return SourceSpec(run_dir=self.run_dir, hf_dir=self.hf_dir, onnx=self.onnx, factory=self.factory,
                          weights=self.weights, signature=self.signature, task=self.task, heldout=self.heldout)

    def command(self) -> list[str]:
        """The ``python -m builders build`` arguments that repeat this build."""
        args = ["build", *self.source().args(), "--repository", str(Path(self.repository).resolve())]
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
    runner: Runner | None = None  # ONNX Runtime on ``onnx``, memoized (the later steps reuse its answers)

    def summary(self) -> str:
        return self.parity.summary()


@dataclass
class HeldOutSplits:
    """The held-out data as the TensorRT step reads it: ``val`` calibrates INT8 engines, ``test`` checks parity."""

    test: Any
    val: Any


def reference_runner(source):
    """What the exported graph must match: the PyTorch module, or for an ONNX source the file as given."""
    given = source.onnx_file()
    if given is not None:
        return ort_runner(ort_session(given), source.signature.input_names, source.signature.output_names), \
            f"onnxruntime:{Path(given).name} (as given)"
    return torch_runner(source.module()), "pytorch"


def export_and_verify(source, heldout, out_dir: Path, settings: BuildConfig, say=lambda text: None) -> ExportResult:
    """Export (or adopt an ONNX source's file), check, simplify when parity allows, and compare with the reference;
    a parity failure is a gate failure."""
    if isinstance(heldout, HeldOutSplits):
        heldout = heldout.test
    out_dir.mkdir(parents=True, exist_ok=True)
    names_in, names_out = source.signature.input_names, source.signature.output_names
    reference, reference_name = reference_runner(source)
    reference = memoized(reference)  # the raw and the simplified graph are compared with the same answers
    parity_cfg = settings.parity
    runners: dict[Path, Runner] = {}

    def parity_of(onnx_file: OnnxFile) -> ParityReport:
        runner = runners[onnx_file.path] = memoized(ort_runner(ort_session(onnx_file.path), names_in, names_out))
        return compare(reference, runner, heldout.batches(parity_cfg.batch_size, parity_cfg.samples), names_out,
                       parity_cfg.tolerance, parity_cfg.min_argmax_agreement, reference_name,
                       f"onnxruntime:{onnx_file.path.name}", source.task,
                       [p for p in heldout.pairs if max(p) < parity_cfg.samples], parity_cfg.min_cosine,
                       parity_cfg.min_neighbour_agreement)

    if source.onnx_file() is not None:
        raw = adopt(source, out_dir / "model.raw.onnx", settings.export)
    else:
        raw = export(source, out_dir / "model.raw.onnx", settings.export)
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
    runner = runners[chosen.path]
    chosen = OnnxFile(final, chosen.opset, chosen.ir_version, chosen.simplified, chosen.nodes, chosen.sha256,
                      chosen.size_bytes)
    result = ExportResult(chosen, chosen_parity, note, runner)
    atomic_write_json(out_dir / "parity.json", {"parity": chosen_parity.to_dict(), "simplify": note,
                                                "onnx": chosen.to_dict()})
    if not chosen_parity.passed:
        raise GateFailure(f"ONNX export of {source.name!r} does not match {reference_name}: "
                          + "; ".join(chosen_parity.failures()) + f" (report: {out_dir / 'parity.json'})")
    return result


@dataclass
class Evaluation:
    quality: Quality
    baseline: gate_mod.ServingBaseline | None
    heldout: dict
    reference: dict | None = None  # embeddings: FP32 ONNX vs the external reference (sentence-transformers)
    runner: Runner | None = None  # the candidate on ONNX Runtime (memoized), for the INT8 comparison

    @property
    def accuracy(self) -> float | None:
        return self.quality.value

    def summary(self) -> str:
        if self.quality.value is None:
            text = self.quality.note
        else:
            text = f"held-out {self.quality.name} {self.quality.value:.4f} on {self.quality.samples} samples"
        if self.reference:
            text += (f"; cosine to {self.reference['reference']} min {self.reference['min_cosine']:.6f} over "
                     f"{self.reference['samples']} texts")
        return text


def heldout_identity(source, heldout) -> dict:
    identity = dict(heldout.identity)
    identity.setdefault("split", heldout.kind)
    identity.setdefault("samples", heldout.size)
    identity.setdefault("tokenizer_sha256", source.origin.get("tokenizer_sha256"))
    identity["kind"] = heldout.kind
    identity["origin"] = heldout.origin
    return identity


def external_reference(source, runner, heldout, settings: BuildConfig) -> dict | None:
    """Embeddings: cosine of every held-out text's vector to the external reference's (sentence-transformers)."""
    if source.task != "embedding" or not heldout.texts:
        return None
    vectors = source.reference_embeddings(heldout.texts)
    if vectors is None:
        return None
    values = cosines(vectors, first_outputs(runner, heldout, settings.parity.batch_size))
    return {"reference": "sentence-transformers", "samples": int(len(values)),
            "min_cosine": round(float(values.min()), 7), "mean_cosine": round(float(values.mean()), 7),
            "threshold": settings.parity.min_cosine,
            "passed": bool(values.min() >= settings.parity.min_cosine)}


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


#: what identifies a model source besides its weights: a changed config.json, signature or pooling is another model
_IDENTITY_KEYS = ("config_sha256", "signature_sha256", "pooling", "factory")


def _identity(source_or_manifest) -> dict:
    """The hashes that make a model source (or a training manifest) the same model: weights, tokenizer, and for
    other sources their config/signature."""
    origin = getattr(source_or_manifest, "origin", None)
    if isinstance(origin, dict):
        identity = {"weights_sha256": origin.get("weights_sha256"), "tokenizer_sha256": origin.get("tokenizer_sha256")}
        identity.update({key: origin[key] for key in _IDENTITY_KEYS if key in origin})
        return identity
    manifest = source_or_manifest
    return {"weights_sha256": manifest.weights.sha256,
            "tokenizer_sha256": manifest.tokenizer.sha256 if manifest.tokenizer else None}


def already_serving(model_dir: Path, source, settings: BuildConfig) -> int | None:
    """The serving version when it was built from these exact weights (and tokenizer, config, signature) with these
    exact settings.

    ``source`` is a model source (or a training manifest). Re-running a build (``make demo`` twice, a restarted
    ``watch``) then publishes nothing instead of a copy.
    """
    from builders.repository import read_lineage, serving_version

    number = serving_version(model_dir)
    if number is None:
        return None
    lineage = read_lineage(model_dir / str(number))
    checkpoint = lineage.get("checkpoint", {})
    identity = _identity(source)
    same_model = identity["weights_sha256"] is not None and all(checkpoint.get(k) == v for k, v in identity.items())
    same_settings = _artifact_settings(lineage.get("build_config")) == _artifact_settings(settings.model_dump(mode="json"))
    return number if same_model and same_settings and not lineage.get("rollback_of") else None


def _load(request: BuildRequest, settings: BuildConfig):
    """The model source, its held-out data and its optimization profiles (a shape declaration that does not fit
    fails here)."""
    source = open_source(request.source(), request.name)
    heldout = source.heldout()
    if heldout.kind == "generated" and heldout.size != settings.parity.generated_samples:
        from builders.sources.base import generated_heldout

        heldout = generated_heldout(source.signature, settings.parity.generated_samples)
    view = source.serving_view()
    profiles = derive_profiles(view.inputs, view.preprocessing, settings)
    return source, heldout, profiles


def build(request: BuildRequest) -> dict:
    """Run the pipeline; returns the report (also written to ``BUILD_DIR/report.json``)."""
    settings = request.settings
    repository = Path(request.repository)
    spec = request.source()
    kind = spec.kind()
    name_hint = request.name or _peek_model_name(spec)
    if not MODEL_NAME.match(name_hint):
        raise UserError(f"--name {name_hint!r} is not a valid Triton model name (letters, digits, '_', '-', '.')")
    build_id = _timestamp()
    build_dir = Path(settings.publish.work_dir) / name_hint / build_id
    steps = StepRunner(build_dir, list(STEPS), quiet=request.quiet)
    full = request.command()
    source_args = spec.args()
    report: dict[str, Any] = {"model": name_hint, "build_id": build_id, "build_dir": str(build_dir),
                              "source": kind.replace("_", "-"), "run_dir": str(getattr(spec, kind)),
                              "repository": str(repository)}

    def finish() -> None:
        report["steps"] = steps.summary()
        atomic_write_json(build_dir / "report.json", report)

    try:
        export_cmd = ["export", *source_args, "--output", str((build_dir / "export").resolve()),
                      *request.config_args()]
        source, heldout, profiles = steps.run("load", lambda: _load(request, settings), full)
        name = request.name or source.name
        report["model"] = name
        report["task"] = source.task
        report["checkpoint"] = dict(source.origin)
        report["profiles"] = [p.to_dict() for p in profiles]
        same = None if request.force or not request.publish else already_serving(repository / name, source, settings)
        if same is not None:
            report["unchanged"] = {"version": same, "model_dir": str(repository / name)}
            return report

        exp = steps.run("export", lambda: export_and_verify(source, heldout, build_dir / "export", settings),
                        export_cmd)
        report["onnx"], report["parity"], report["simplify"] = exp.onnx.to_dict(), exp.parity.to_dict(), exp.simplify

        def evaluate() -> Evaluation:
            runner = exp.runner or memoized(ort_runner(ort_session(exp.onnx.path), source.signature.input_names,
                                                       source.signature.output_names))
            value = quality(source.task, runner, heldout, settings.parity.batch_size)
            identity = heldout_identity(source, heldout)
            identity["accuracy"] = None if value.value is None else round(value.value, 6)
            identity["metric"] = value.name
            if value.value is None:
                identity["note"] = value.note
            baseline = gate_mod.serving_baseline(repository / name, source, heldout, identity,
                                                 settings.parity.batch_size) if value.value is not None else None
            return Evaluation(value, baseline, identity, external_reference(source, runner, heldout, settings), runner)

        evaluation = steps.run("evaluate", evaluate, full)
        report["accuracy"] = None if evaluation.accuracy is None else round(evaluation.accuracy, 6)
        report["quality"] = evaluation.quality.to_dict()
        report["heldout"] = evaluation.heldout
        if evaluation.quality.value is None:
            report["accuracy_gating"] = evaluation.quality.note
        if evaluation.reference:
            report["reference"] = {"fp32": evaluation.reference}

        def quantize_step():
            if not settings.quantize.enabled:
                raise Skipped("quantize.enabled is false")
            from builders.quantize import build_int8

            return build_int8(source, heldout, exp.onnx.path, build_dir / "export" / "model.int8.onnx",
                              settings.quantize, settings.parity.batch_size, evaluation.quality, evaluation.runner)

        quant = steps.run("quantize", quantize_step,
                          ["quantize", *source_args, "--onnx", str(exp.onnx.path.resolve()),
                           "--output", str((build_dir / "quantize").resolve()), *request.config_args()])
        report["int8"] = quant.to_dict() if quant else None
        if quant and quant.reference:
            report.setdefault("reference", {})["int8"] = quant.reference

        splits = HeldOutSplits(test=heldout, val=source.calibration())
        plan = steps.run("tensorrt", lambda: _tensorrt_step(request, source, splits, exp.onnx.path, profiles,
                                                            build_dir / "tensorrt"),
                         ["tensorrt", *source_args, "--onnx", str(exp.onnx.path.resolve()),
                          "--output", str((build_dir / "tensorrt").resolve()), *request.config_args()])
        report["tensorrt"] = plan.to_dict() if plan else {"skipped": steps.records["tensorrt"].detail}

        int8_path = exp.onnx.path.with_name("model.int8.onnx") if quant and quant.accepted else None
        package = steps.run("package", lambda: make_package(build_dir / "package", name, source, profiles,
                                                            exp.onnx.path, int8_path,
                                                            plan.files() if plan else None, settings), full)
        report["package"] = {"root": str(package.root), "members": list(package.members)}

        decision = steps.run("gate", lambda: _gate(exp, evaluation, settings, name), full)
        report["gate"] = decision.to_dict()

        lineage = {
            "format_version": 1, "model": name, "task": source.task, "source": source.kind,
            "family": {"primary": name, "members": list(package.members)},
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "build_id": build_id,
            "checkpoint": report["checkpoint"], "onnx": report["onnx"], "int8": report["int8"],
            "plan": report["tensorrt"] if plan else None, "parity": report["parity"],
            "simplify": report["simplify"], "heldout": evaluation.heldout, "gate": report["gate"],
            "reference": report.get("reference"),
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


def _peek_model_name(spec: SourceSpec) -> str:
    """The default model name, read cheaply before the source is opened (it names the build folder)."""
    from builders.sources.huggingface import _safe_name

    kind = spec.kind()
    if kind == "run_dir":
        from common.manifest import read_manifest

        return read_manifest(spec.run_dir, verify=False).model
    if kind == "factory":
        return spec.factory.rpartition(":")[2].replace(".", "_")
    return _safe_name(Path(getattr(spec, kind)).stem if kind == "onnx" else Path(spec.hf_dir).name)


def _gate(exp: ExportResult, evaluation: Evaluation, settings: BuildConfig, name: str):
    other = []
    if evaluation.reference and not evaluation.reference["passed"]:
        other.append(f"cosine to {evaluation.reference['reference']} is {evaluation.reference['min_cosine']:.6f} for "
                     f"the worst of {evaluation.reference['samples']} texts (expected >= "
                     f"{evaluation.reference['threshold']})")
    decision = gate_mod.decide(exp.parity.passed, exp.parity.failures(), evaluation.accuracy, evaluation.baseline,
                               settings.gate.max_accuracy_drop, evaluation.quality.name or "accuracy", other)
    gate_mod.enforce(decision, name)
    return decision


def roll_out(url: str, package: Package, repository: Path, version: int, settings: BuildConfig, build_dir: Path) -> None:
    """Load the published version on a live Triton; retract it from disk if Triton cannot load it."""
    from builders.rollout import load_published, resync

    try:
        load_published(url, package.members, package.primary, version, settings.publish.load_timeout_s, repository)
    except UserError as exc:
        retract(repository, package, version, build_dir / "retracted")
        resync(url, package.members, settings.publish.load_timeout_s)
        raise UserError(f"{exc}; version {version} was retracted from {repository} (kept in {build_dir / 'retracted'}) "
                        "and the previous version keeps serving") from None
