"""New labelled data for the sidecar: JSON-lines files dropped into a watched directory.

Each ``*.jsonl`` file holds one JSON object per line in the model's record format (``{"text": ..., "label": ...}``
for ``textclf``, ``{"image": [[...8x8...]], "label": 3}`` for ``digits``; see each model's ``decode_records``).
Producers should write the file under a name starting with ``.`` (ignored) and rename it when complete.

A file is taken whole or not at all: any malformed line rejects the file with a warning naming file, line and reason
(the sidecar keeps running, and a corrected file with new content is tried again). An accepted file is copied into
``RUN_DIR/data/`` (atomically) and recorded with its SHA-256 in the next checkpoint, so a resumed or audited run reads
exactly the bytes it trained on, even after the producer has removed the original. A copy that no checkpoint records
yet (the sidecar stopped right after accepting it) is *pending* and is folded in again on the next start.
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
            key = source_key(path.name, sha256_bytes(path.read_bytes()))
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
    stored = stored_name(taken, path)
    atomic_write_bytes(run_dir / stored, blob)
    return {"file": stored, "source": str(path), "sha256": sha256_bytes(blob), "records": len(records)}, records


def stored_name(index: int, source: Path) -> str:
    return f"{DATA_DIR}/{index:05d}-{source.name}"


def source_key(name: str, sha256: str) -> str:
    """What identifies a data file across the watched directory and the run's copies: original name + content."""
    return f"{name}:{sha256}"


def recorded_keys(entries: list[dict[str, Any]]) -> set[str]:
    return {source_key(Path(e["source"]).name, e["sha256"]) for e in entries}


def pending(run_dir: Path, recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies in ``RUN_DIR/data/`` that no checkpoint records yet (accepted just before a restart), in order."""
    folder = run_dir / DATA_DIR
    if not folder.is_dir():
        return []
    known = {e["file"] for e in recorded}
    out = []
    for path in sorted(folder.glob("[0-9][0-9][0-9][0-9][0-9]-*.jsonl")):
        name = f"{DATA_DIR}/{path.name}"
        if name in known:
            continue
        blob = path.read_bytes()
        out.append({"file": name, "source": path.name[6:], "sha256": sha256_bytes(blob),
                    "records": len(parse_records(blob, str(path)))})
    return out


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
