"""Watch mode: follow a training run and publish every new best checkpoint through the same gate.

The trainer rewrites ``RUN_DIR/manifest.json`` (atomically, last) whenever it exports a new best checkpoint. This loop
polls that file's hash; each new manifest whose files verify is built by :func:`builders.pipeline.build` exactly as
``python -m builders build`` would, gate included. A gate failure or a broken export is reported and the watch goes on
(a later checkpoint may pass); Ctrl-C or SIGTERM stops it cleanly between builds.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from common.errors import UserError
from common.files import sha256_file
from common.foreground import stop_requested
from common.manifest import MANIFEST_NAME
from builders.pipeline import BuildRequest, build
from builders.report import summary_lines


def watch(request: BuildRequest, interval_s: float, max_builds: int | None = None) -> int:
    """Poll until stopped; returns the number of versions published."""
    manifest = Path(request.run_dir) / MANIFEST_NAME
    seen: str | None = None
    published = builds = 0
    print(f"watching {manifest} every {interval_s:g} s (Ctrl-C to stop)", flush=True)
    with stop_requested() as stop:
        while not stop.is_set():
            digest = sha256_file(manifest) if manifest.is_file() else None
            if digest and digest != seen:
                seen = digest
                builds += 1
                print(f"new manifest {digest[:12]}: building", flush=True)
                try:
                    report = build(replace(request))
                    print("\n".join(summary_lines(report)), flush=True)
                    published += 1 if report.get("published") else 0
                except UserError as exc:  # gate failure, broken export: report and keep watching
                    print(f"not published: {exc}", file=sys.stderr, flush=True)
                if max_builds is not None and builds >= max_builds:
                    break
            deadline = time.monotonic() + interval_s
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(min(0.2, interval_s))
    print(f"watch stopped: {published} version(s) published from {builds} manifest(s)", flush=True)
    return published
