"""Before Triton starts: a repository whose folders Triton would refuse, or a model family a killed publication split.

Triton reads every folder at the repository root as a model, hidden ones included: a staging folder a killed
``python -m builders publish`` left (``.textclf.<random>.staging``) or a copy such as ``.digits.tmp`` makes it refuse
to start, with a message about a directory name. Here the launcher says plainly what it found: stale staging folders of
the builders are removed (under the repository lock, so never one a running publication is using), a family split by an
interrupted publication is brought back to its recorded version (see :mod:`builders.publication`), and any other hidden
folder stops the start with one line naming it.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from common.errors import UserError

LOCK_WAIT_S = 30.0  # a publication in progress holds the lock for seconds


def hidden_folders(repository: Path) -> list[Path]:
    return sorted(p for p in repository.iterdir() if p.is_dir() and p.name.startswith("."))


def _lock(repository: Path) -> int | None:
    """The builders' repository lock (flock on the folder), waited for up to ``LOCK_WAIT_S``; None when it stays held."""
    fd = os.open(repository, os.O_RDONLY | os.O_DIRECTORY)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.2)


def prepare_repository(repository: str | Path, say=print, every_folder: bool = True) -> None:
    """Repair what interrupted publications left, or raise :class:`UserError` naming what Triton would refuse.

    ``every_folder``: Triton will read every folder of the repository (modes none and poll, or explicit loading all);
    with named models only, another hidden folder is none of its business."""
    from builders.publication import reconcile, split_families, stale_folders

    repository = Path(repository)
    stale = stale_folders(repository)
    if stale or split_families(repository):
        if not os.access(repository, os.W_OK) or _read_only(repository):
            found = [str(p) for p in stale] + [s.describe() for s in split_families(repository)]
            raise UserError(f"model repository {repository} needs repair but is not writable: {'; '.join(found)} "
                            "(run `python -m clients serve` once with write access, or publish again)")
        fd = _lock(repository)
        if fd is None:
            raise UserError(f"model repository {repository} is locked by a publication for more than "
                            f"{LOCK_WAIT_S:.0f} s and holds what it left half done: {', '.join(map(str, stale))}")
        try:
            for line in reconcile(repository):
                say(f"repository: {line}", flush=True)
        finally:
            os.close(fd)
    others = hidden_folders(repository) if every_folder else []
    if others:
        raise UserError(f"model repository {repository} holds {', '.join(p.name for p in others)}: Triton reads every "
                        "folder there as a model (hidden ones too) and would refuse to start; move "
                        f"{'it' if len(others) == 1 else 'them'} out of the repository")


def _read_only(repository: Path) -> bool:
    try:
        return bool(os.statvfs(repository).f_flag & os.ST_RDONLY)
    except OSError:
        return False
