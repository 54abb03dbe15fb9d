"""Configuration is data: typed pydantic models loaded from TOML or YAML, with errors that name the field.

Every component describes its settings as a pydantic model (defaults included) and loads overrides with
:func:`load_config`. A bad value stops the program before any work starts, with a message such as
``training.toml: optimizer.lr: Input should be greater than 0 (got -0.1)``.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Mapping, TypeVar

from common.errors import UserError

T = TypeVar("T")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file into a dict, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"configuration file {path} does not exist (expected a .toml, .yaml or .json file)")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"{path}: unknown configuration format {suffix!r} (expected .toml, .yaml, .yml or .json)")
    except UserError:
        raise
    except Exception as exc:  # parser errors carry line numbers; keep them
        raise UserError(f"{path}: cannot parse {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table/mapping at the top level, got {type(data).__name__}")
    return data


def format_validation_error(exc: Exception, source: str) -> str:
    """Turn a pydantic ValidationError into one line per problem: ``source: field.path: message (got value)``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{source}: {exc}"
    lines = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        got = err.get("input")
        got_text = "" if isinstance(got, Mapping) else f" (got {got!r})"
        lines.append(f"{source}: {loc}: {err.get('msg')}{got_text}")
    return "; ".join(lines)


def validate(model: type[T], data: Mapping[str, Any], source: str = "configuration") -> T:
    """Build ``model`` from ``data`` or raise a :class:`UserError` naming every bad field."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(data))  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def load_config(model: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults of ``model``, updated by the file at ``path`` (if any), then by ``overrides`` (e.g. CLI flags).

    ``overrides`` uses dotted keys for nested fields (``{"optimizer.lr": 1e-3}``); ``None`` values are ignored so
    unset command-line flags do not clobber the file.
    """
    data: dict[str, Any] = read_mapping(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{path or 'configuration'}: {'.'.join(parts[:i + 1])} must be a table to set "
                                f"{dotted}, got {node!r}")
        node[parts[-1]] = value
    return validate(model, data, str(path) if path else "configuration")
