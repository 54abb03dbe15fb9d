"""Writes that never leave a half-written file or directory behind.

A crash (even ``kill -9``) in the middle of any of these leaves either the previous content or the new one, never a
mixture: data goes to a temporary file in the same directory, is fsynced, renamed over the target, and the directory
entry is fsynced too. Directories are published the same way: built under a temporary name, then renamed in one step.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

_CHUNK = 1 << 20


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask() is process-wide and not thread-safe to probe later


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a directory's entries (a rename is only durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a published file gets normal permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file so that ``dst`` is either absent/old or a complete copy."""
    with open(src, "rb") as fin, atomic_writer(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)


def publish_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a fully built directory into place in one rename; refuse to replace an existing ``target``.

    ``staging`` must be on the same filesystem as ``target`` (create it with :func:`staging_dir`).
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; a published directory is never replaced")
    for root, _dirs, names in os.walk(staging):
        for name in names:
            with open(Path(root) / name, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)
    os.rename(staging, target)
    fsync_dir(target.parent)


def staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh hidden directory under ``parent`` for building something that :func:`publish_dir` will move in.

    mkdtemp makes it private (0700); what is published must be readable like any new folder (e.g. by Triton's user
    in a container mounting the repository), so it gets 0777 minus the umask, as ``mkdir`` would give it."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".staging", dir=parent))
    os.chmod(path, 0o777 & ~_UMASK)
    return path
