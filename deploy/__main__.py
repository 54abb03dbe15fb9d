"""``python -m deploy``: one command line for the Kubernetes deployment (see deploy/kubernetes/README.md)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common import cli
from common.errors import run_cli

COMMANDS = [
    ("render", "deploy.render",
     "generate overlay patches from deploy/kubernetes/settings.toml, render every overlay with kubectl kustomize, "
     "validate every object and write rendered/*.yaml (--check: fail when committed files are stale)"),
    ("validate", "deploy.validate_cli", "validate manifest files (rendered output, pipeline Jobs) offline"),
    ("converge", "deploy.rollout",
     "after a publish to s3://: load the pinned version on every ready replica until all serve it (the builder Job)"),
    ("local-cluster", "deploy.local_cluster",
     "moto S3 + Triton replicas reading s3:// + nginx + load: a live rollout with zero failed requests, then kill -9"),
]


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser("python -m deploy", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    run_cli(main)
