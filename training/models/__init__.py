"""Registry of the models the platform can train and build.

Adding a model is one new file in this package that defines a :class:`~training.models.base.ModelSpec` subclass
decorated with :func:`register`; every module here is imported on first use, so nothing else needs editing.
"""
from __future__ import annotations

import importlib
import pkgutil

from common.errors import UserError
from training.models.base import ModelSpec, Splits, StrictConfig

__all__ = ["ModelSpec", "Splits", "StrictConfig", "register", "get", "names"]

_REGISTRY: dict[str, type[ModelSpec]] = {}
_discovered = False


def register(cls: type[ModelSpec]) -> type[ModelSpec]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"model name {cls.name!r} registered twice ({_REGISTRY[cls.name].__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec registered under ``name``; a :class:`UserError` listing the known names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; expected one of: {', '.join(names())}")
    return _REGISTRY[name]()
