"""Resumable checkpoints that are either complete and verified or ignored: never half a state.

Layout inside ``RUN_DIR/checkpoints/``::

    ckpt-e0003-b000000-s000000120.pt          torch.save of plain tensors and containers (no code objects)
    ckpt-e0003-b000000-s000000120.pt.sha256   "<sha256>  <file name>" (``sha256sum -c`` format), written second

``e`` is the epoch to continue with, ``b`` the micro-batch within it, ``s`` the optimizer step. A checkpoint counts
only when its checksum file exists and matches, ``torch.load(weights_only=True)`` can read it, it belongs to this run
(same identity) and all its floating-point weights are finite. Both files are written atomically (temporary file,
fsync, rename), so ``kill -9`` at any moment leaves either the previous set of checkpoints or the new one plus, at
worst, a checkpoint without its checksum, which is then reported and set aside (renamed ``*.bad``, never deleted) and
the previous good checkpoint is used.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from common.files import atomic_write_bytes, atomic_write_text, sha256_bytes

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-e(?P<epoch>\d{4,})-b(?P<position>\d{6,})-s(?P<step>\d{9,})\.pt$")
REQUIRED_KEYS = ("format", "identity", "model_name", "epoch", "position", "step", "model", "optimizer",
                 "scheduler", "scaler", "rng", "history", "best", "config")


class CheckpointInvalid(Exception):
    """A checkpoint that must not be used; the message is the reason, for the warning line."""


def checkpoint_name(epoch: int, position: int, step: int) -> str:
    return f"ckpt-e{epoch:04d}-b{position:06d}-s{step:09d}.pt"


def parse_name(name: str) -> tuple[int, int, int] | None:
    """``(epoch, position, step)`` of a checkpoint file name, or ``None`` for other files."""
    match = _NAME.match(name)
    if not match:
        return None
    return int(match["epoch"]), int(match["position"]), int(match["step"])


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]


@dataclass(frozen=True)
class Loaded:
    path: Path
    sha256: str
    blob: bytes
    payload: dict[str, Any]


def decode(blob: bytes, identity: str | None = None) -> dict[str, Any]:
    """Read checkpoint bytes with ``weights_only=True`` and check structure, identity and finiteness."""
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, anything torch refuses
        raise CheckpointInvalid(f"torch.load(weights_only=True) failed: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict):
        raise CheckpointInvalid(f"expected a dict, found {type(payload).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointInvalid(f"not a training checkpoint (missing {', '.join(missing)})")
    if payload["format"] != FORMAT_VERSION:
        raise CheckpointInvalid(f"format version {payload['format']}, this trainer reads {FORMAT_VERSION}")
    if identity is not None and payload["identity"] != identity:
        raise CheckpointInvalid(f"belongs to another run (identity {payload['identity']}, this run is {identity})")
    bad = non_finite_tensors(payload["model"])
    if bad:
        raise CheckpointInvalid(f"non-finite weights in {', '.join(bad[:3])}")
    return payload


class CheckpointStore:
    """The checkpoints of one run directory (only the process that holds the run lock uses it)."""

    def __init__(self, directory: str | Path, identity: str, warn: Callable[[str], None]):
        self.directory = Path(directory)
        self.identity = identity
        self.warn = warn

    # ---- writing -------------------------------------------------------------------------------------------
    def save(self, payload: dict[str, Any], name: str) -> tuple[Path, str]:
        """Serialize, write atomically, then write the checksum file; refuses non-finite weights."""
        bad = non_finite_tensors(payload["model"])
        if bad:
            raise ValueError(f"refusing to write checkpoint {name}: non-finite weights in {', '.join(bad[:3])}")
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        blob = buffer.getvalue()
        digest = sha256_bytes(blob)
        path = self.directory / name
        atomic_write_bytes(path, blob)
        atomic_write_text(self._sha_path(path), f"{digest}  {name}\n")
        return path, digest

    def prune(self, keep_last: int, protect: set[str]) -> list[Path]:
        """Delete all but the newest ``keep_last`` checkpoints and the ``protect``-ed names; returns the deleted."""
        deleted = []
        for path in self.listing()[keep_last:]:
            if path.name in protect:
                continue
            path.unlink(missing_ok=True)  # checkpoint first: a leftover checksum file alone is harmless
            self._sha_path(path).unlink(missing_ok=True)
            deleted.append(path)
        return deleted

    def clean_leftovers(self) -> None:
        """Remove temporary files of interrupted writes and checksum files whose checkpoint is gone."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name.startswith(".ckpt-") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif path.name.endswith(".pt.sha256") and not path.with_suffix("").exists():
                path.unlink(missing_ok=True)

    # ---- reading -------------------------------------------------------------------------------------------
    def listing(self) -> list[Path]:
        """Checkpoint files, newest (furthest in training) first."""
        if not self.directory.is_dir():
            return []
        found = [(parse_name(p.name), p) for p in self.directory.iterdir() if p.is_file()]
        return [p for key, p in sorted(((k, p) for k, p in found if k), reverse=True)]

    def read(self, path: str | Path) -> Loaded:
        """Verify and load one checkpoint, raising :class:`CheckpointInvalid` with the reason."""
        path = Path(path)
        sha_path = self._sha_path(path)
        if not sha_path.is_file():
            raise CheckpointInvalid("no checksum file (its write was interrupted)")
        expected = sha_path.read_text(encoding="utf-8").split()
        if not expected or not re.fullmatch(r"[0-9a-f]{64}", expected[0]):
            raise CheckpointInvalid(f"unreadable checksum file {sha_path.name}")
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise CheckpointInvalid(f"cannot read: {exc}") from None
        actual = sha256_bytes(blob)
        if actual != expected[0]:
            raise CheckpointInvalid(f"checksum mismatch (file is truncated or corrupted: {len(blob)} bytes, "
                                    f"sha256 {actual[:12]}…, expected {expected[0][:12]}…)")
        return Loaded(path, actual, blob, decode(blob, self.identity))

    def latest(self) -> Loaded | None:
        """The newest usable checkpoint; every unusable newer one is reported and set aside as ``*.bad``."""
        for path in self.listing():
            try:
                return self.read(path)
            except CheckpointInvalid as reason:
                self.set_aside(path, str(reason))
        return None

    def set_aside(self, path: Path, reason: str) -> None:
        bad = path.with_name(path.name + ".bad")
        self.warn(f"warning: checkpoint {path} is unusable: {reason}; kept as {bad.name}, using the previous one")
        os.replace(path, bad)
        sha = self._sha_path(path)
        if sha.exists():
            os.replace(sha, bad.with_name(bad.name + ".sha256"))

    @staticmethod
    def _sha_path(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")
