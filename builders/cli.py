"""``python -m builders``: one command per step, and ``build`` for all of them (see ``--help`` of each)."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from common.config import load_config
from common.errors import GateFailure, UserError, run_cli
from builders.settings import BuildConfig

DESCRIPTION = """Turn a model into served, versioned Triton models, refusing anything that is not right.

model sources (one per command; see builders/sources/):
  --run-dir RUN                                   a training run (manifest.json + model.safetensors)
  --hf-dir DIR --task embedding|classification    a Hugging Face folder (sentence-transformers layout honoured)
  --onnx FILE --signature S.toml                  an ONNX file exported elsewhere (export skipped)
  --factory pkg.mod:fn --weights W.safetensors --signature S.toml   any nn.Module
  --heldout FILE.jsonl|FILE.npz                   held-out data (texts with labels or pairs, or tensors)

steps (each is also a command below):
  build      the whole pipeline: export -> parity -> INT8 -> TensorRT -> configs + lint -> gate -> publish [-> load]
  export     PyTorch -> ONNX (named, dynamic axes, checked, simplified) + parity report vs PyTorch
  quantize   INT8 dynamic quantization for the CPU path: size, latency, accuracy vs FP32, accept/refuse
  tensorrt   ONNX -> TensorRT plan + metadata + parity vs ONNX Runtime (GPU hosts with TensorRT)
  plan-check is a plan (its model.plan.json) usable with this host's GPU and TensorRT?
  config     print or write the generated config.pbtxt files for a training run
  lint       check a model folder's config.pbtxt against its artifacts (non-zero exit on any finding)
  publish    publish a built package as version N+1 (and load it on a running Triton)
  versions   list a model's kept versions with their lineage
  rollback   serve a kept version again (published as the newest version), optionally loading it live
  watch      follow a training run and publish every new best checkpoint through the same gate
"""


_OVERRIDES = (("keep", "--keep", "publish.keep_versions"), ("work_dir", "--work-dir", "publish.work_dir"),
              ("tensorrt", "--tensorrt", "tensorrt.mode"))


def _settings(args) -> BuildConfig:
    """Defaults, then the --config file, then the flags that override single settings."""
    overrides = {key: getattr(args, attr, None) for attr, _flag, key in _OVERRIDES}
    return load_config(BuildConfig, args.config, overrides)


def _override_args(args) -> list[str]:
    """The override flags as given, so step commands (reproduce.sh) use the same settings."""
    out: list[str] = []
    for attr, flag, _key in _OVERRIDES:
        value = getattr(args, attr, None)
        if value is not None:
            out += [flag, str(Path(value).resolve()) if attr == "work_dir" else str(value)]
    return out


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML/YAML/JSON file with builders settings (builders/settings.py); "
                                               "defaults are used for anything it does not set")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=int, help="versions to keep per model (overrides publish.keep_versions, default 3)")
    p.add_argument("--work-dir", type=Path, help="where build folders, reports and reproduce scripts go "
                                                 "(overrides publish.work_dir, default .cache/builds)")
    p.add_argument("--tensorrt", choices=["auto", "off", "required"],
                   help="build a TensorRT plan: auto (when TensorRT and a GPU exist), off, required")


def _add_source_args(p: argparse.ArgumentParser, onnx_flag: str = "--onnx") -> None:
    """The model source flags; commands whose ``--onnx`` is the built file name an ONNX source ``--source-onnx``."""
    g = p.add_argument_group(f"model source (exactly one of --run-dir, --hf-dir, {onnx_flag}, --factory)")
    g.add_argument("--run-dir", type=Path, help="training run directory (manifest.json + model.safetensors)")
    g.add_argument("--hf-dir", type=Path, help="Hugging Face model folder (config.json, model.safetensors, "
                                                "tokenizer.json; modules.json + 1_Pooling honoured), read offline")
    g.add_argument(onnx_flag, dest="onnx_source", type=Path, metavar="ONNX",
                   help="an ONNX file exported elsewhere (needs --signature); the export step is skipped")
    g.add_argument("--factory", help="package.module:function returning an nn.Module (needs --weights, --signature)")
    g.add_argument("--weights", type=Path, help="safetensors state dict for --factory")
    g.add_argument("--signature", type=Path, help="TOML: inputs, outputs (names, dtypes, symbolic dims), task, labels, "
                                                  "preprocessing (see builders/sources/base.py)")
    g.add_argument("--task", choices=["classification", "embedding", "generic"],
                   help="what the model does (default: the signature's; --hf-dir: embedding)")
    g.add_argument("--heldout", type=Path, help="held-out data: .jsonl (text, optional label or pair) or .npz (one "
                                                "array per input, optional labels); default: the run's test split, "
                                                "or inputs generated from the signature (accuracy gating off)")


def _source_spec(args):
    from builders.sources import SourceSpec

    return SourceSpec(run_dir=args.run_dir, hf_dir=args.hf_dir, onnx=args.onnx_source, factory=args.factory,
                      weights=args.weights, signature=args.signature, task=args.task, heldout=args.heldout)


def _open(args, name: str | None = None):
    from builders.sources import open_source

    return open_source(_source_spec(args), name)


def _add_build_args(p: argparse.ArgumentParser) -> None:
    _add_source_args(p)
    p.add_argument("--repository", type=_repository_arg, default=Path("model_repository"),
                   help="Triton model repository to publish into (default: model_repository)")
    p.add_argument("--name", help="model name in the repository (default: the manifest's model name)")
    _add_config(p)
    _add_overrides(p)
    p.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit model-control mode: load the new version "
                                        "live (a version it cannot load is retracted)")
    p.add_argument("--report", type=Path, help="also write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")


def _request(args):
    from builders.pipeline import BuildRequest

    spec = _source_spec(args)
    spec.kind()  # exactly one source, before anything else happens
    if not isinstance(args.repository, Path):  # s3://: the gate and the publication below work on a directory
        raise UserError(f"--repository {args.repository}: build works on a directory repository; for object storage "
                        "build against a local copy (`aws s3 sync` or none for a first version) with --no-publish, then "
                        f"`python -m builders publish --package BUILD_DIR/package --repository {args.repository}`")
    return BuildRequest(run_dir=args.run_dir, hf_dir=args.hf_dir, onnx=args.onnx_source, factory=args.factory,
                        weights=args.weights, signature=args.signature, task=args.task, heldout=args.heldout,
                        repository=args.repository, settings=_settings(args),
                        config_file=args.config, name=args.name, publish=not getattr(args, "no_publish", False),
                        triton_url=args.triton_url, quiet=args.quiet, force=getattr(args, "force", False),
                        overrides=_override_args(args))


def cmd_build(args) -> int:
    from common.files import atomic_write_json
    from builders.pipeline import build
    from builders.report import summary_lines
    from builders.repository import ensure_writable

    if not getattr(args, "no_publish", False):
        ensure_writable(args.repository, "build")  # before the pipeline runs, not after it
    report = build(_request(args))
    print("\n".join(summary_lines(report)))
    if args.report:
        atomic_write_json(args.report, report)
    return 0


def cmd_export(args) -> int:
    from builders.pipeline import export_and_verify

    settings = _settings(args)
    source = _open(args)
    result = export_and_verify(source, source.heldout(), args.output, settings)
    print(f"wrote {result.onnx.path} ({result.onnx.size_bytes / 1e6:.2f} MB, opset {result.onnx.opset}, "
          f"simplified: {result.simplify.get('kept')})")
    print(result.parity.summary())
    print(f"report: {args.output / 'parity.json'}")
    return 0


def cmd_quantize(args) -> int:
    from common.files import atomic_write_json
    from builders.quantize import build_int8

    settings = _settings(args)
    source = _open(args)
    args.output.mkdir(parents=True, exist_ok=True)
    report = build_int8(source, source.heldout(), args.onnx, args.output / "model.int8.onnx",
                        settings.quantize, settings.parity.batch_size)
    atomic_write_json(args.output / "quantize.json", report.to_dict())
    print(report.summary())
    if not report.accepted:
        raise GateFailure(f"INT8 refused: {report.reason}")
    return 0


def cmd_tensorrt(args) -> int:
    from builders import tensorrt_build
    from builders.pipeline import HeldOutSplits
    from builders.shapes import derive_profiles

    reason = tensorrt_build.unavailable_reason()
    if reason:
        raise UserError(f"cannot build a TensorRT plan here: {reason}")
    settings = _settings(args)
    source = _open(args)
    view = source.serving_view()
    profiles = derive_profiles(view.inputs, view.preprocessing, settings)
    splits = HeldOutSplits(test=source.heldout(), val=source.calibration())
    result = tensorrt_build.build_and_verify(source, splits, args.onnx, profiles, settings, args.output)
    print(result.summary())
    print(f"wrote {result.plan} and {result.files()['metadata']}")
    return 0


def cmd_plan_check(args) -> int:
    from builders.tensorrt_meta import check_compatible, host_info, read_metadata

    meta = read_metadata(args.plan)
    host = host_info()
    problems = check_compatible(meta, host, str(args.plan))
    if problems:
        raise UserError("; ".join(problems))
    print(f"{args.plan}: compatible with this host (TensorRT {host.tensorrt_version}, "
          f"{', '.join(f'{n} ({c})' for n, c in host.gpus)})")
    return 0


def cmd_config(args) -> int:
    from common.manifest import read_manifest
    from builders import triton_configs as tc
    from builders.packaging import package_configs
    from builders.shapes import derive_profiles

    settings = _settings(args)
    if args.run_dir is not None and args.hf_dir is None and args.onnx_source is None and args.factory is None:
        manifest = read_manifest(args.run_dir, verify=False)  # no torch, no data: the manifest says it all
    else:
        manifest = _open(args).serving_view()
    name = args.name or manifest.model
    profiles = derive_profiles(manifest.inputs, manifest.preprocessing, settings)
    # what a build would write when INT8 and TensorRT are both produced
    vocab = tc.tokenizer_vocab_size(Path(args.run_dir or ".") / manifest.tokenizer.file) if manifest.tokenizer else None
    configs = package_configs(name, manifest, profiles, settings, int8=settings.quantize.enabled, plan=True,
                              vocab_size=vocab)
    for relative, config in configs.items():
        if args.target and not relative.endswith(f"{args.target}.pbtxt") and not (
                args.target == "cpu" and relative == "config.pbtxt"):
            continue
        text = tc.to_text(config)
        if args.output:
            from common.files import atomic_write_text

            atomic_write_text(args.output / relative, text)
            print(f"wrote {args.output / relative}")
        else:
            print(f"# {relative}\n{text}")
    return 0


def cmd_lint(args) -> int:
    from builders.lint import lint_all, lint_model_dir
    from builders.repository import VERSION_STAGE

    model_dir = args.model_dir
    version_dirs = None
    if (model_dir / VERSION_STAGE).is_dir() and not any(p.name.isdigit() for p in model_dir.iterdir()):
        version_dirs = {VERSION_STAGE: model_dir / VERSION_STAGE}  # a package member, before publication
    if args.config_name:
        findings = lint_model_dir(model_dir, args.config_name, not args.no_policy, version_dirs,
                                  args.require_python_queue_policy)
    else:
        findings = lint_all(model_dir, not args.no_policy, version_dirs, args.require_python_queue_policy)
    for finding in findings:
        print(f"{model_dir}/{finding}")
    if findings:
        raise UserError(f"{len(findings)} finding(s) in {model_dir}")
    print(f"{model_dir}: no findings")
    return 0


def _publish(package, args, settings) -> int:
    from builders.object_store import is_s3, publish_and_roll_out
    from builders.pipeline import roll_out
    from builders.repository import prune_package, publish_package

    if is_s3(args.repository):  # object storage: same whole-or-nothing publish, by pinning configs (object_store.py)
        return publish_and_roll_out(package, args, settings)
    published = publish_package(package, args.repository, plan_check=not getattr(args, "skip_plan_check", False))
    print(f"published {package.primary} version {published.version} to {args.repository} "
          f"(previous: {published.previous or 'none'}; members: {', '.join(package.members)})")
    if args.triton_url:
        build_dir = Path(tempfile.mkdtemp(prefix=f"{package.primary}.", dir=_work_dir(settings)))
        roll_out(args.triton_url, package, args.repository, published.version, settings, build_dir)
        print(f"Triton at {args.triton_url} now serves {package.primary} version {published.version}")
    pruned = prune_package(package, args.repository, settings.publish.keep_versions)  # after a successful rollout
    removed = sorted({number for numbers in pruned.values() for number in numbers})
    if removed:
        print(f"removed old version(s) {', '.join(map(str, removed))} (publish.keep_versions = "
              f"{settings.publish.keep_versions})")
    return 0


def _work_dir(settings) -> Path:
    path = Path(settings.publish.work_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _repository_arg(text: str):
    from builders.object_store import repository_arg

    return repository_arg(text)


def cmd_publish(args) -> int:
    from builders.packaging import lint_package
    from builders.repository import Package, ensure_writable

    ensure_writable(args.repository, "publish")
    settings = _settings(args)
    package = Package.read(args.package)
    findings = lint_package(package, settings)
    if findings:
        raise UserError("package does not pass the linter, nothing published: " + "; ".join(findings))
    return _publish(package, args, settings)


def cmd_versions(args) -> int:
    from builders.publication import inspect
    from builders.repository import read_lineage, serving_version, versions

    model_dir = args.repository / args.model
    found = versions(model_dir)
    if not found:
        raise UserError(f"{model_dir} has no versions (expected a model published by `python -m builders build`)")
    family = next((s for s in inspect(args.repository) if args.model in s.members), None)
    serving = family.version if family and family.version is not None else serving_version(model_dir)
    rows = []
    for number in found:
        lineage = read_lineage(model_dir / str(number))
        rows.append({"version": number, "serving": number == serving, "built_at": lineage.get("built_at"),
                     "accuracy": lineage.get("heldout", {}).get("accuracy"),
                     "weights_sha256": lineage.get("checkpoint", {}).get("weights_sha256"),
                     "onnx_sha256": (lineage.get("onnx") or {}).get("sha256"),
                     "rollback_of": lineage.get("rollback_of")})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["serving"] else " "
        acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "   ?  "
        extra = f"  rollback of v{row['rollback_of']}" if row["rollback_of"] else ""
        print(f"{mark} v{row['version']:<4} accuracy {acc}  built {row['built_at']}  weights "
              f"{(row['weights_sha256'] or '?')[:12]}  onnx {(row['onnx_sha256'] or '?')[:12]}{extra}")
    print("(* = serving: the version its family's publication record names, the highest one)")
    if family and family.split:
        raise UserError(family.describe() + " (the next publish, or `python -m clients serve` before it starts "
                        "Triton, restores the recorded version)")
    return 0


def cmd_rollback(args) -> int:
    import datetime as dt

    from builders.packaging import lint_package
    from builders.repository import ensure_writable, package_from_version, read_lineage, write_lineage

    ensure_writable(args.repository, "rollback")
    settings = _settings(args)
    work = Path(tempfile.mkdtemp(prefix=f"{args.model}.rollback.", dir=_work_dir(settings)))
    package = package_from_version(args.repository, args.model, args.version, work / "package")  # files verified
    findings = lint_package(package, settings)  # the kept configuration snapshot against the kept files
    if findings:
        raise UserError(f"version {args.version} of {args.model!r} does not pass the linter, nothing published: "
                        + "; ".join(findings))
    lineage = read_lineage(package.version_dir(package.primary))
    lineage["rollback_of"] = args.version
    lineage["rolled_back_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_lineage(package, lineage)
    return _publish(package, args, settings)


def cmd_watch(args) -> int:
    from builders.watch import watch

    if _source_spec(args).kind() != "run_dir":
        raise UserError("watch follows a training run's manifest.json: give --run-dir (other sources are built once "
                        "with `python -m builders build`)")
    watch(_request(args), args.interval, args.max_builds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m builders", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="the whole pipeline, from a training run to a published (and loaded) version",
                       description=__import__("builders.pipeline", fromlist=["x"]).__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_build_args(p)
    p.add_argument("--no-publish", action="store_true", help="stop after the gate: the package stays in the build folder")
    p.add_argument("--force", action="store_true",
                   help="build and publish even when the serving version already has these weights and settings")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("export", help="PyTorch -> ONNX with parity against PyTorch")
    _add_source_args(p)
    p.add_argument("--output", type=Path, required=True, help="folder for model.onnx and parity.json")
    _add_config(p)
    _add_overrides(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="INT8 dynamic quantization with the accuracy check (exit 3 when refused)")
    _add_source_args(p, "--source-onnx")
    p.add_argument("--onnx", type=Path, required=True, help="the FP32 ONNX file to quantize")
    p.add_argument("--output", type=Path, required=True, help="folder for model.int8.onnx and quantize.json")
    _add_config(p)
    _add_overrides(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("tensorrt", help="TensorRT plan + metadata + parity vs ONNX Runtime (needs TensorRT and a GPU)")
    _add_source_args(p, "--source-onnx")
    p.add_argument("--onnx", type=Path, required=True, help="the ONNX file to build from")
    p.add_argument("--output", type=Path, required=True, help="folder for model.plan and model.plan.json")
    _add_config(p)
    _add_overrides(p)
    p.set_defaults(func=cmd_tensorrt)

    p = sub.add_parser("plan-check", help="refuse a plan built for another GPU or TensorRT version")
    p.add_argument("plan", type=Path, help="path of model.plan (its model.plan.json is read)")
    p.set_defaults(func=cmd_plan_check)

    p = sub.add_parser("config", help="print or write the generated configurations for a model source")
    _add_source_args(p)
    p.add_argument("--name", help="model name (default: the manifest's)")
    p.add_argument("--target", choices=["cpu", "cpu_int8", "onnxruntime", "tensorrt"], help="only this target's configuration")
    p.add_argument("--output", type=Path, help="write into this model folder instead of printing")
    _add_config(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("lint", help="check config.pbtxt against the model's artifacts (non-zero exit on any finding)")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a model folder of a repository (or a package member)")
    p.add_argument("--config-name", help="lint configs/NAME.pbtxt only (default: config.pbtxt and every configs/*.pbtxt)")
    p.add_argument("--no-policy", action="store_true",
                   help="skip policy checks (bounded rejecting queue); mismatches are always checked")
    p.add_argument("--require-python-queue-policy", action="store_true",
                   help="require the bounded queue on python-backend models too (off by default, like the builders' "
                        "cpu_runtime.queue_policy: Triton 2.51 delays ~0.5%% of their requests by ~500 ms with one)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("publish", help="publish a package built with `build --no-publish` as version N+1")
    p.add_argument("--package", type=Path, required=True, help="the package/ folder of a build directory")
    p.add_argument("--repository", type=_repository_arg, default=Path("model_repository"),
                   help="model repository: a directory, or s3://[host:port/]bucket/prefix (Triton's form)")
    p.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit mode to load the version on (s3:// "
                                        "repositories: a comma-separated list, one per replica)")
    p.add_argument("--keep", type=int, help="versions to keep per model")
    p.add_argument("--work-dir", type=Path, help="where rollout records go (overrides publish.work_dir)")
    p.add_argument("--skip-plan-check", action="store_true",
                   help="publish a TensorRT plan this host cannot run (e.g. a builder host publishing for GPU servers)")
    _add_config(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("versions", help="list a model's kept versions (* marks the serving one)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("rollback", help="serve kept version N again: it is re-published as the newest version")
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    p.add_argument("--model", required=True, help="model name (its ensemble family follows it)")
    p.add_argument("--version", type=int, required=True, help="the kept version to serve again")
    p.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit mode to load it on")
    p.add_argument("--keep", type=int, help="versions to keep per model")
    p.add_argument("--work-dir", type=Path, help="where the rollback package is assembled (overrides publish.work_dir)")
    p.add_argument("--skip-plan-check", action="store_true",
                   help="roll back to a version whose TensorRT plan this host cannot run")
    _add_config(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("watch", help="publish every new best checkpoint of a training run through the gate")
    _add_build_args(p)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between checks of manifest.json (default 5)")
    p.add_argument("--max-builds", type=int, help="stop after this many builds (default: run until Ctrl-C)")
    p.set_defaults(func=cmd_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def entry() -> None:
    run_cli(main, sys.argv[1:])
