"""Registry of the models the platform can train and build.

Three ways in, none of which needs this package edited:

* a module in this package that defines a :class:`~training.models.base.ModelSpec` subclass decorated with
  :func:`register` (every module here is imported on first use);
* an installed distribution that declares an entry point in the group ``inference_platform.models`` pointing at a
  ``ModelSpec`` subclass (or at a module that registers its specs), e.g. in its ``pyproject.toml``::

      [project.entry-points."inference_platform.models"]
      blobs = "my_package.specs:Blobs"

* a spec file named on the command line, ``--spec path/to/file.py:ClassName`` (:func:`load_spec_file`); the run
  records the reference so a resumed run and the export find the same class again.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path

from common.errors import UserError
from training.models.base import ModelSpec, Splits, StrictConfig

__all__ = ["ModelSpec", "Splits", "StrictConfig", "register", "get", "names", "load_spec_file", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "inference_platform.models"

_REGISTRY: dict[str, type[ModelSpec]] = {}
_discovered = False


def register(cls: type[ModelSpec]) -> type[ModelSpec]:
    if not (inspect.isclass(cls) and issubclass(cls, ModelSpec)) or inspect.isabstract(cls):
        raise UserError(f"{getattr(cls, '__qualname__', cls)!r} is not a concrete training.models.ModelSpec subclass "
                        "(expected a class defining name, Arch, Data, inputs, outputs, build, load_data, collate and "
                        "example_inputs)")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"model spec {cls.__module__}.{cls.__qualname__} has no `name` (expected a class attribute "
                        "such as name = 'blobs')")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name]
        if (other.__module__, other.__qualname__, inspect.getfile(other)) == (cls.__module__, cls.__qualname__,
                                                                               inspect.getfile(cls)):
            return other  # the same file loaded twice (e.g. --spec and an entry point naming the same class)
        raise UserError(f"model name {name!r} registered twice ({other.__module__}.{other.__qualname__}, "
                        f"{cls.__module__}.{cls.__qualname__}); rename one of them")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name} = {entry.value!r} (group {ENTRY_POINT_GROUP}"
        where += f", distribution {entry.dist.name})" if entry.dist else ")"
        try:
            target = entry.load()
        except Exception as exc:  # an installed plug-in that does not import is the user's to fix
            raise UserError(f"{where} does not import: {type(exc).__name__}: {exc}") from None
        if inspect.ismodule(target):
            continue  # importing it ran its @register decorators
        if not (inspect.isclass(target) and issubclass(target, ModelSpec)):
            raise UserError(f"{where} names {target!r}; expected a ModelSpec subclass or a module that registers one")
        register(target)


def load_spec_file(reference: str) -> type[ModelSpec]:
    """Import ``path/to/file.py:ClassName`` and register the class (idempotent for the same file and class)."""
    path_text, sep, class_name = str(reference).rpartition(":")
    if not sep or not path_text or not class_name.isidentifier():
        raise UserError(f"--spec {reference!r}: expected PATH/TO/FILE.py:ClassName")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file() or path.suffix != ".py":
        raise UserError(f"--spec {reference!r}: {path} is not a Python file (expected PATH/TO/FILE.py:ClassName)")
    module_name = "_model_spec_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UserError(f"--spec {reference!r}: {path} does not import: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, ModelSpec)
                       and v is not ModelSpec and v.__module__ == module_name)
        raise UserError(f"--spec {reference!r}: {path} defines no {class_name!r} (model specs there: "
                        f"{', '.join(found) or 'none'})")
    _discover()
    # the manifest names this file as the run's factory, so a builder rebuilds the network without this registry
    cls.source_reference = f"{path}:{class_name}"
    return register(cls)


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec registered under ``name``; a :class:`UserError` listing the known names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; expected one of: {', '.join(names())} (a model defined elsewhere: "
                        f"--spec FILE.py:ClassName or an entry point in the group {ENTRY_POINT_GROUP})")
    return _REGISTRY[name]()
