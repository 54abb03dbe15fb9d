"""The software a result came from: installed package versions, recorded beside builds and measurements."""
from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """The git commit of this checkout (``+dirty`` when it has uncommitted changes), or ``unknown``: recorded in every
    training manifest and build report, so a result names the code that made it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the installed distributions among ``names`` (absent ones are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
