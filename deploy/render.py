"""``python -m deploy render``: write the generated overlay files, render every overlay with ``kubectl kustomize``,
validate the result and write it to ``deploy/kubernetes/rendered/<overlay>.yaml`` (and ``rendered/pipeline.yaml``).

Why the rendered manifests are committed: a reviewer sees what a settings or base change does to the objects the
cluster receives, and ``--check`` (what the tests run) fails when a committed file differs from a fresh render, so
the settings, the generated patches and the rendered output can never drift apart. Nothing is written when any
overlay fails to render or validate.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError
from common.files import atomic_write_text

from deploy.manifests import HEADER, generated_files
from deploy.settings import DEFAULT_SETTINGS_FILE, KUBERNETES_DIR, DeploySettings, load_settings
from deploy.validate import validate_overlay


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise UserError("kubectl not found; install kubectl >= 1.27 (it carries Kustomize: `kubectl kustomize DIR`)")
    return found


def kustomize(directory: Path) -> str:
    """``kubectl kustomize DIR`` output; its own error message when the kustomization is broken."""
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise UserError(f"kubectl kustomize {directory} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def write_sources(root: Path, files: dict[str, str]) -> list[str]:
    changed = [rel for rel, text in files.items()
               if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text]
    for rel in changed:
        atomic_write_text(root / rel, files[rel])
    return changed


PIPELINE = "pipeline"   # hand-written kustomization (train, build + roll out, load test), rendered beside overlays


def rendered_text(settings: DeploySettings, root: Path, name: str) -> str:
    folder = PIPELINE if name == PIPELINE else f"overlays/{name}"
    text = kustomize(root / folder)
    validate_overlay(settings, name, text)
    return f"# {HEADER}\n# kubectl kustomize deploy/kubernetes/{folder}\n" + text


def rendered_names(settings: DeploySettings) -> list[str]:
    return [*settings.overlays, PIPELINE]


def stale(root: Path, files: dict[str, str]) -> list[str]:
    return sorted(rel for rel, text in files.items()
                  if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text)


def render_all(settings: DeploySettings, root: Path, check: bool) -> tuple[list[str], int]:
    """(files that differ, files considered). Everything is rendered and validated in a scratch copy first, so a
    failure writes nothing; ``check`` only compares."""
    import tempfile

    sources = generated_files(settings)
    with tempfile.TemporaryDirectory(prefix="k8s-render.") as scratch:
        copy = Path(scratch) / "kubernetes"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("rendered"))
        write_sources(copy, sources)
        rendered = {f"rendered/{name}.yaml": rendered_text(settings, copy, name) for name in rendered_names(settings)}
    everything = {**sources, **rendered}
    if check:
        return stale(root, everything), len(everything)
    changed = write_sources(root, everything)
    for old in (root / "rendered").glob("*.yaml"):
        if f"rendered/{old.name}" not in rendered:  # an overlay removed from the settings
            old.unlink()
            changed.append(f"rendered/{old.name}")
    return changed, len(everything)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default=str(DEFAULT_SETTINGS_FILE),
                        help="settings file (default: deploy/kubernetes/settings.toml)")
    parser.add_argument("--dir", default=str(KUBERNETES_DIR), help="the kubernetes folder (default: deploy/kubernetes)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 2 listing the generated or rendered files that are stale")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m deploy render", __doc__, add_arguments, argv, args)
    settings = load_settings(args.settings)
    root = Path(args.dir)
    changed, total = render_all(settings, root, args.check)
    if args.check:
        if changed:
            raise UserError(f"{len(changed)} Kubernetes file(s) are stale: {', '.join(changed)}; run "
                            "`python -m deploy render` (or `make k8s-render`) and commit the result")
        print(f"all {total} generated and rendered Kubernetes files are up to date and valid", flush=True)
        return 0
    for rel in changed:
        print(f"wrote {root / rel}", flush=True)
    print(f"{len(changed)} of {total} files changed; every overlay rendered and validated", flush=True)
    return 0
