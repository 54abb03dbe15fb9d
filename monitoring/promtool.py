"""``python -m monitoring check``: Prometheus' own promtool validates what we generate, plus a staleness check.

Runs, in order: the generated files are current (same check as ``generate --check``), ``promtool check config`` on the
compose configuration (which also checks the rule files it references), ``promtool check rules`` on every rule file and
``promtool test rules`` on the unit tests. Each step prints promtool's verdict; the command fails on the first step that
fails, quoting promtool's own message.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError
from monitoring.generate import ALERT_RULES, MONITORING_DIR, PROMETHEUS_CONFIG, RECORDING_RULES, RULE_TESTS
from monitoring.generate import generated_files, stale_files
from monitoring.slo import DEFAULT_SLO_FILE, load_slo


@dataclass(frozen=True)
class PromtoolResult:
    command: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def promtool_binary(name: str = "promtool") -> str:
    found = shutil.which(name)
    if not found:
        raise UserError(f"{name!r} not found; install Prometheus' tools (Debian/Ubuntu: apt-get install prometheus) "
                        "or pass --promtool PATH")
    return found


def run_promtool(args: list[str], binary: str = "promtool", cwd: Path | None = None,
                 timeout_s: float = 120) -> PromtoolResult:
    command = [promtool_binary(binary), *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout_s)
    return PromtoolResult(command, proc.returncode, (proc.stdout + proc.stderr).strip())


def check_all(root: Path, binary: str = "promtool") -> list[tuple[str, PromtoolResult]]:
    """promtool's checks of the files under ``root`` (a monitoring directory); stops at the first failure."""
    steps = [
        ("check config", ["check", "config", str(root / PROMETHEUS_CONFIG)]),
        ("check rules", ["check", "rules", str(root / RECORDING_RULES), str(root / ALERT_RULES)]),
        ("test rules", ["test", "rules", str(root / RULE_TESTS)]),
    ]
    results = []
    for name, args in steps:
        result = run_promtool(args, binary)
        results.append((name, result))
        if not result.ok:
            break
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=str(MONITORING_DIR),
                        help="monitoring directory holding prometheus/ and grafana/ (default: the package)")
    parser.add_argument("--slo", default=str(DEFAULT_SLO_FILE),
                        help="SLO file the staleness check regenerates from (default monitoring/slo.toml)")
    parser.add_argument("--promtool", default="promtool", help="promtool executable (default: promtool on PATH)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m monitoring check", __doc__, add_arguments, argv, args)
    root = Path(args.dir)
    stale = stale_files(root, generated_files(load_slo(args.slo)))
    if stale:
        raise UserError(f"generated files are stale: {', '.join(stale)}; run `python -m monitoring generate`")
    print("generated files: up to date", flush=True)
    for name, result in check_all(root, args.promtool):
        print(f"promtool {name}: {'ok' if result.ok else 'FAILED'}", flush=True)
        if not result.ok:
            raise UserError(f"`{' '.join(result.command)}` failed:\n{result.output}")
    return 0
