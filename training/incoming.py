"""New labelled data for the sidecar: JSON-lines files dropped into a watched directory.

Each ``*.jsonl`` file holds one JSON object per line in the model's record format (``{"text": ..., "label": ...}``
for ``textclf``, ``{"image": [[...8x8...]], "label": 3}`` for ``digits``; see each model's ``decode_records``).
Producers should write the file under a name starting with ``.`` (ignored) and rename it when complete.

A file is taken whole or not at all: any malformed line rejects the file with a warning naming file, line and reason
(the sidecar keeps running, and a corrected file with new content is tried again). An accepted file is copied into
``RUN_DIR/data/`` (atomically) and recorded with its SHA-256 in the checkpoint, so a resumed or audited run reads
exactly the bytes it trained on, even after the producer has removed the original.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from common.errors import UserError
from common.files import atomic_write_bytes, sha256_bytes
from training.models.base import ModelSpec, Splits

DATA_DIR = "data"


def parse_records(blob: bytes, source: str) -> list[dict[str, Any]]:
    """JSON objects of a JSON-lines file; ``ValueError`` naming the first bad line."""
    records = []
    for number, line in enumerate(blob.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}:{number}: expected a JSON object per line")
        records.append(record)
    if not records:
        raise ValueError(f"{source}: no records")
    return records


def candidates(watch_dir: Path, seen: set[str]) -> list[Path]:
    """Complete (non-hidden) ``*.jsonl`` files in ``watch_dir`` whose name and content were not seen before."""
    if not watch_dir.is_dir():
        return []
    found = []
    for path in sorted(watch_dir.glob("*.jsonl")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            key = f"{path.name}:{sha256_bytes(path.read_bytes())}"
        except OSError:
            continue
        if key not in seen:
            found.append(path)
    return found


def accept(spec: ModelSpec, splits: Splits, arch: Any, path: Path, run_dir: Path,
           taken: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate ``path`` and copy it into the run directory; returns (its record for the checkpoint, its records)."""
    blob = path.read_bytes()
    records = parse_records(blob, str(path))
    try:
        spec.decode_records(records, splits, arch)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    digest = sha256_bytes(blob)
    stored = Path(DATA_DIR) / f"{taken:05d}-{path.name}"
    atomic_write_bytes(run_dir / stored, blob)
    return {"file": str(stored), "source": str(path), "sha256": digest, "records": len(records)}, records


def read_recorded(run_dir: Path, incoming: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The records of every data file a run has folded in, verified against their recorded SHA-256."""
    out = []
    for entry in incoming:
        path = run_dir / entry["file"]
        if not path.is_file():
            raise UserError(f"{path} is missing: the run trained on it (from {entry['source']}); restore it to resume")
        blob = path.read_bytes()
        if sha256_bytes(blob) != entry["sha256"]:
            raise UserError(f"{path} changed since the run trained on it (sha256 {entry['sha256'][:12]}… recorded); "
                            "restore the original to resume")
        out.append(parse_records(blob, str(path)))
    return out


def as_dataset(spec: ModelSpec, splits: Splits, arch: Any, files: list[list[dict[str, Any]]]) -> Dataset:
    parts = [spec.decode_records(records, splits, arch) for records in files]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
