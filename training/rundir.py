"""A run directory knows which run it belongs to, and only one trainer works in it at a time.

``RUN_DIR/run.json`` is written (atomically) before anything else and holds the run's identity: the model and every
setting that decides the weights (see :func:`training.config.identity_dict`). Re-running with the same identity
resumes; a different model or configuration is refused with the list of differing settings, so a typo can never
overwrite another run's checkpoints. A non-empty directory without ``run.json`` is refused too: it is not ours.

``RUN_DIR/.lock`` is held with ``flock`` for the whole run, so two trainers (say, the sidecar and a manual run)
cannot interleave checkpoints. The kernel drops the lock when the process dies, even by ``kill -9``.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from pathlib import Path

from common.errors import UserError
from common.files import atomic_write_json
from training.config import RunConfig, differences, identity, identity_dict

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def claim(self, config: RunConfig) -> bool:
        """Create or verify the directory for ``config`` and take its lock; True when it already held this run."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--run-dir {self.path} is a file; expected a directory (new or from an earlier run)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        run_file = self.path / RUN_FILE
        wanted = {"model": config.model, "identity": identity(config), "settings": identity_dict(config)}
        if run_file.is_file():
            try:
                stored = json.loads(run_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, OSError) as exc:
                raise UserError(f"{run_file} is unreadable ({exc}); this run directory is damaged, use a new "
                                "--run-dir") from None
            if stored.get("identity") != wanted["identity"]:
                if stored.get("model") != config.model:
                    raise UserError(f"run directory {self.path} belongs to model {stored.get('model')!r}, not "
                                    f"{config.model!r}; use another --run-dir (nothing was changed)")
                diff = differences(stored.get("settings", {}), wanted["settings"])
                raise UserError(f"run directory {self.path} belongs to a run with other settings ("
                                + "; ".join(diff[:6]) + "); re-run with the original settings to resume, or use a "
                                "new --run-dir (nothing was changed)")
            return True
        foreign = [p.name for p in self.path.iterdir() if p.name != LOCK_FILE]
        if foreign:
            raise UserError(f"--run-dir {self.path} is not empty and has no {RUN_FILE} (found {', '.join(sorted(foreign)[:3])}"
                            "); it is not a training run directory: choose a new or empty directory")
        atomic_write_json(run_file, {
            **wanted, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return False

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"run directory {self.path} is in use by {holder}; wait for it to finish or stop it "
                            "(only one trainer may write a run directory)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
