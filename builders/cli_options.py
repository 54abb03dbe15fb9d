"""Command-line options several ``python -m builders`` commands share, and how they become settings, a model source,
a build request or a publication: one definition each, so every command spells and means them the same way."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common.config import load_config
from common.errors import UserError

from builders.settings import BuildConfig

_OVERRIDES = (("keep", "--keep", "publish.keep_versions"), ("work_dir", "--work-dir", "publish.work_dir"),
              ("tensorrt", "--tensorrt", "tensorrt.mode"))


def settings(args: argparse.Namespace) -> BuildConfig:
    """Defaults, then the --config file, then the flags that override single settings."""
    overrides = {key: getattr(args, attr, None) for attr, _flag, key in _OVERRIDES}
    return load_config(BuildConfig, args.config, overrides)


def override_args(args: argparse.Namespace) -> list[str]:
    """The override flags as given, so step commands (reproduce.sh) use the same settings."""
    out: list[str] = []
    for attr, flag, _key in _OVERRIDES:
        value = getattr(args, attr, None)
        if value is not None:
            out += [flag, str(Path(value).resolve()) if attr == "work_dir" else str(value)]
    return out


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML/YAML/JSON file with builders settings (builders/settings.py); "
                                               "defaults are used for anything it does not set")


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=int, help="versions to keep per model (overrides publish.keep_versions, default 3)")
    p.add_argument("--work-dir", type=Path, help="where build folders, reports and reproduce scripts go "
                                                 "(overrides publish.work_dir, default .cache/builds)")
    p.add_argument("--tensorrt", choices=["auto", "off", "required"],
                   help="build a TensorRT plan: auto (when TensorRT and a GPU exist), off, required")


def add_source_args(p: argparse.ArgumentParser, onnx_flag: str = "--onnx") -> None:
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


def add_onnx_step_args(p: argparse.ArgumentParser, onnx_help: str, output_help: str) -> None:
    """The flags of a step that works on an ONNX file already built (``quantize``, ``tensorrt``): its model source
    (for held-out data and the signature), the file, the output folder, the settings."""
    add_source_args(p, "--source-onnx")
    p.add_argument("--onnx", type=Path, required=True, help=onnx_help)
    p.add_argument("--output", type=Path, required=True, help=output_help)
    add_config(p)
    add_overrides(p)


def source_spec(args: argparse.Namespace):
    from builders.sources import SourceSpec

    return SourceSpec(run_dir=args.run_dir, hf_dir=args.hf_dir, onnx=args.onnx_source, factory=args.factory,
                      weights=args.weights, signature=args.signature, task=args.task, heldout=args.heldout)


def open_model_source(args: argparse.Namespace, name: str | None = None):
    from builders.sources import open_source

    return open_source(source_spec(args), name)


def repository_arg(text: str):
    """``--repository``: a directory, or ``s3://[host:port/]bucket/prefix``."""
    from builders.object_store import repository_arg as parse

    return parse(text)


def add_build_args(p: argparse.ArgumentParser) -> None:
    """The options of a whole build (``build`` and ``watch``)."""
    add_source_args(p)
    p.add_argument("--repository", type=repository_arg, default=Path("model_repository"),
                   help="Triton model repository to publish into (default: model_repository)")
    p.add_argument("--name", help="model name in the repository (default: the manifest's model name)")
    add_config(p)
    add_overrides(p)
    p.add_argument("--triton-url", help="HOST:PORT of a Triton in explicit model-control mode: load the new version "
                                        "live (a version it cannot load is retracted)")
    p.add_argument("--report", type=Path, help="also write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")


def build_request(args: argparse.Namespace):
    """The :class:`builders.pipeline.BuildRequest` the build options describe (exactly one source, checked first)."""
    from builders.pipeline import BuildRequest

    spec = source_spec(args)
    spec.kind()  # exactly one source, before anything else happens
    if not isinstance(args.repository, Path):  # s3://: the gate and the publication below work on a directory
        raise UserError(f"--repository {args.repository}: build works on a directory repository; for object storage "
                        "build against a local copy (`aws s3 sync` or none for a first version) with --no-publish, then "
                        f"`python -m builders publish --package BUILD_DIR/package --repository {args.repository}`")
    return BuildRequest(run_dir=args.run_dir, hf_dir=args.hf_dir, onnx=args.onnx_source, factory=args.factory,
                        weights=args.weights, signature=args.signature, task=args.task, heldout=args.heldout,
                        repository=args.repository, settings=settings(args),
                        config_file=args.config, name=args.name, publish=not getattr(args, "no_publish", False),
                        triton_url=args.triton_url, quiet=args.quiet, force=getattr(args, "force", False),
                        overrides=override_args(args))


def work_dir(config: BuildConfig) -> Path:
    path = Path(config.publish.work_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(package, args: argparse.Namespace, config: BuildConfig) -> int:
    """Publish ``package`` as the next version of ``args.repository``, load it on ``args.triton_url`` when given,
    then prune to ``publish.keep_versions`` (after a successful rollout only). Shared by ``publish`` and ``rollback``."""
    from builders.object_store import is_s3, publish_and_roll_out
    from builders.pipeline import roll_out
    from builders.repository import prune_package, publish_package

    if is_s3(args.repository):  # object storage: same whole-or-nothing publish, by pinning configs (object_store.py)
        return publish_and_roll_out(package, args, config)
    published = publish_package(package, args.repository, plan_check=not getattr(args, "skip_plan_check", False))
    print(f"published {package.primary} version {published.version} to {args.repository} "
          f"(previous: {published.previous or 'none'}; members: {', '.join(package.members)})")
    if args.triton_url:
        build_dir = Path(tempfile.mkdtemp(prefix=f"{package.primary}.", dir=work_dir(config)))
        roll_out(args.triton_url, package, args.repository, published.version, config, build_dir)
        print(f"Triton at {args.triton_url} now serves {package.primary} version {published.version}")
    pruned = prune_package(package, args.repository, config.publish.keep_versions)  # after a successful rollout
    removed = sorted({number for numbers in pruned.values() for number in numbers})
    if removed:
        print(f"removed old version(s) {', '.join(map(str, removed))} (publish.keep_versions = "
              f"{config.publish.keep_versions})")
    return 0
