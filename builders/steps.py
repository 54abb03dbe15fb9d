"""Run named pipeline steps with a status file, progress lines and a reproduce script for the one that fails.

Shaped after Triton Model Navigator's pipelines: each step has a name, a status (ok / failed / skipped), a duration and a
detail line, all kept in ``BUILD_DIR/status.json`` (rewritten atomically after every step). When a step fails, its
status says why and ``BUILD_DIR/reproduce.sh`` holds the command that re-runs that step alone (or the whole build),
so a failure can be handed to someone else as one file.
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.errors import GateFailure, UserError
from common.files import atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


class Skipped(Exception):
    """Raised by a step that does not apply (the message says why); the pipeline goes on."""


@dataclass
class StepRecord:
    name: str
    status: str = "pending"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class StepRunner:
    build_dir: Path
    names: list[str]
    quiet: bool = False
    records: dict[str, StepRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self.records = {name: StepRecord(name) for name in self.names}
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.build_dir / "status.json", {"steps": [r.__dict__ for r in self.records.values()]})

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def run(self, name: str, action: Callable[[], Any], reproduce: list[str] | None = None) -> Any:
        record = self.records[name]
        position = self.names.index(name) + 1
        self._say(f"[{position}/{len(self.names)}] {name} …")
        start = time.monotonic()
        try:
            result = action()
        except Skipped as why:
            record.status, record.detail = "skipped", str(why)
            record.seconds = round(time.monotonic() - start, 2)
            self._save()
            self._say(f"[{position}/{len(self.names)}] {name} skipped: {why}")
            return None
        except BaseException as exc:
            record.status = "failed"
            record.seconds = round(time.monotonic() - start, 2)
            record.detail = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            self._save()
            if reproduce and not isinstance(exc, KeyboardInterrupt):
                script = self.write_reproduce(name, reproduce)
                if isinstance(exc, UserError):
                    kind = GateFailure if isinstance(exc, GateFailure) else UserError
                    raise kind(f"{exc} [step {name!r} failed; status: {self.build_dir / 'status.json'}; "
                               f"reproduce: {script}]") from None
            raise
        record.status = "ok"
        record.seconds = round(time.monotonic() - start, 2)
        record.detail = getattr(result, "summary", lambda: "")() if result is not None else ""
        self._save()
        self._say(f"[{position}/{len(self.names)}] {name} ok ({record.seconds:.1f} s)")
        return result

    def write_reproduce(self, step: str, command: list[str]) -> Path:
        script = self.build_dir / "reproduce.sh"
        text = ("#!/bin/sh\n"
                f"# Re-runs the step {step!r} that failed; see status.json beside this file.\n"
                "set -e\n"
                f"cd {shlex.quote(str(REPO_ROOT))}\n"
                f"exec {shlex.join([sys.executable, '-m', 'builders', *command])}\n")
        atomic_write_text(script, text)
        script.chmod(0o755)
        return script

    def summary(self) -> list[dict]:
        return [r.__dict__ for r in self.records.values()]
