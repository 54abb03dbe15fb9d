"""Read request inputs from files for ``python -m clients infer``.

* ``.npy``: one array, for a single-input model; its dtype is sent as stored (so it must match the model's).
* ``.npz``: several arrays, named after the model's inputs.
* ``.json``: a nested list of numbers (one input), an object ``{"input name": nested list, ...}``, or a list of
  strings (texts). JSON has no dtypes, so numbers are converted to the model's datatype.
* ``.txt`` (``--text-file``): one text per line; blank lines are skipped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError



def read_inputs(path: str | Path) -> Any:
    """What ``--input FILE`` holds: an array, a mapping of name to array/list, or a list of texts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file {path} does not exist (expected a .npy, .npz or .json file)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError) as exc:
            raise UserError(f"{path}: not a readable .npz archive ({exc})") from None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
            data = data["inputs"]
        if not isinstance(data, (list, dict)):
            raise UserError(f"{path}: expected a list (one input or texts) or an object of input name to values, "
                            f"got {type(data).__name__}")
        return data
    raise UserError(f"{path}: unknown input format {suffix!r} (expected .npy, .npz or .json; texts: --text-file)")


def read_texts(path: str | Path) -> list[str]:
    """Texts from a ``.txt`` file (one per line) or a ``.json`` list of strings."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file {path} does not exist (expected a .txt file with one text per line, or a .json list)")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise UserError(f"{path}: expected a JSON list of strings")
        return data
    return [line.strip() for line in content.splitlines() if line.strip()]


def rows(inputs: Any) -> int:
    """Number of rows (first dimension) in what :func:`read_inputs` returned."""
    first = next(iter(inputs.values()), []) if isinstance(inputs, dict) else inputs
    if isinstance(first, np.ndarray) and first.ndim == 0:
        return 1  # a scalar .npy is one row, and has no len()
    return len(first) if hasattr(first, "__len__") else 1


def split(inputs: Any, size: int) -> list[Any]:
    """Chunks of at most ``size`` rows (every input cut at the same rows)."""
    total = rows(inputs)
    chunks = []
    for start in range(0, total, size):
        if isinstance(inputs, dict):
            chunks.append({name: value[start:start + size] for name, value in inputs.items()})
        else:
            chunks.append(inputs[start:start + size])
    return chunks
