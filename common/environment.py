"""The software a result came from: installed package versions, recorded beside builds and measurements."""
from __future__ import annotations

import importlib.metadata
from typing import Iterable


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the installed distributions among ``names`` (absent ones are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
