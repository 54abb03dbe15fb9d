"""Infinity (``infinity-emb``), the dedicated embeddings server, as a peer in its own virtual environment.

Infinity's ``server`` and ``torch`` extras pin ``numpy<2``, ``sentence-transformers<4``, ``click<8.2``, ``typer<0.13``,
``uvicorn<0.33`` and ``rich<14``; installed beside this project they would downgrade our packages, so the benchmark
creates a virtual environment of its own under ``.cache/peers/infinity-<version>/`` once (it downloads torch and
Infinity from PyPI, several minutes) and reuses it afterwards. A marker file written after a successful install
holds the requirement and the seconds the install took; an install that failed or was interrupted leaves no marker and
is redone from scratch next time.

Serving is offline (``HF_HUB_OFFLINE=1``): Infinity loads the model directory given to it, nothing else.
Its CPU engine is ``torch``; the batching settings that matter on a small CPU machine are the batch size (how many
sentences one forward pass takes) and the queue limit; :data:`TUNED_SETTINGS` records the fair settings the comparison
uses and why.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.files import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.0.78"
REQUIREMENT = f"infinity-emb[server,torch]=={VERSION}"
TORCH = "torch==2.13.0"  # the CPU build this project uses (pip's find-links on our machines; PyPI's wheel elsewhere)
DEFAULT_VENV = ROOT / ".cache" / "peers" / f"infinity-{VERSION}"
MARKER = "installed.json"

# Infinity batches whatever is queued when its model thread is free, up to batch_size sentences per forward pass.
# 32 is the batch size of the comparison's batch mix and of sentence-transformers' encode default; a larger batch
# only adds padding waste with sentences of very different lengths on 2 cores. The torch engine is Infinity's CPU
# engine (its optimum/ONNX engine needs the optimum extra, which is not part of what the issue installs).
TUNED_SETTINGS = {"engine": "torch", "device": "cpu", "batch_size": 32, "model_warmup": True}


class PeerUnavailable(UserError):
    """A peer that cannot be installed or started: the comparison reports why and runs the other rows."""


@dataclass
class InfinityEnv:
    venv: Path
    install_s: float | None  # seconds the install took (None when the marker predates that field)
    reused: bool

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "infinity_emb"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def installed(venv: Path = DEFAULT_VENV) -> InfinityEnv | None:
    """The environment when a previous install of this exact requirement completed, else None."""
    marker = venv / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if data.get("requirement") != REQUIREMENT or not (venv / "bin" / "infinity_emb").is_file():
        return None
    return InfinityEnv(venv, data.get("install_s"), reused=True)


def ensure_installed(venv: Path = DEFAULT_VENV, log_file: Path | None = None, timeout_s: float = 3600) -> InfinityEnv:
    """Create (or reuse) Infinity's own virtual environment; :class:`PeerUnavailable` says exactly what failed."""
    venv = Path(venv)
    existing = installed(venv)
    if existing is not None:
        return existing
    if venv.exists():
        shutil.rmtree(venv)  # a half-finished install: start over rather than trust it
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_file) if log_file else venv.parent / f"infinity-{VERSION}-install.log"
    started = time.monotonic()
    steps = [("create the virtual environment", [sys.executable, "-m", "venv", str(venv)]),
             ("upgrade pip", [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"]),
             (f"install {REQUIREMENT} with {TORCH}",
              [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--progress-bar", "off", TORCH,
               REQUIREMENT])]
    with open(log_file, "w") as log:
        for what, command in steps:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            left = timeout_s - (time.monotonic() - started)
            try:
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                raise PeerUnavailable(f"infinity: could not {what} within {timeout_s:.0f} s (log: {log_file})") from None
            log.write(done.stdout + done.stderr)
            log.flush()
            if done.returncode != 0:
                raise PeerUnavailable(f"infinity: could not {what} (exit status {done.returncode}): "
                                      f"{_last_lines(done.stderr or done.stdout)} (log: {log_file})")
    if not (venv / "bin" / "infinity_emb").is_file():
        raise PeerUnavailable(f"infinity: {REQUIREMENT} installed but has no infinity_emb command in {venv / 'bin'}")
    install_s = round(time.monotonic() - started, 1)
    atomic_write_json(venv / MARKER, {"requirement": REQUIREMENT, "torch": TORCH, "install_s": install_s,
                                      "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return InfinityEnv(venv, install_s, reused=False)


def package_versions(env: InfinityEnv) -> dict[str, str]:
    """Versions inside Infinity's environment (for the report): infinity-emb, torch, transformers, ..."""
    code = ("import importlib.metadata as m, json; names = ['infinity-emb', 'torch', 'transformers', "
            "'sentence-transformers', 'numpy', 'uvicorn', 'fastapi']\n"
            "out = {}\nfor n in names:\n    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def server_command(env: InfinityEnv, model_dir: Path, port: int, settings: dict | None = None) -> list[str]:
    """``infinity_emb v2`` serving ``model_dir`` on 127.0.0.1:``port`` with the comparison's settings."""
    s = {**TUNED_SETTINGS, **(settings or {})}
    command = [str(env.executable), "v2", "--model-id", str(model_dir), "--served-model-name", "minilm",
               "--engine", s["engine"], "--device", s["device"], "--batch-size", str(s["batch_size"]),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command.append("--model-warmup" if s["model_warmup"] else "--no-model-warmup")
    return command


def server_environment(threads: int | None = None) -> dict[str, str]:
    """Offline, and the same thread budget our other peers get (all cores of the machine by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
                "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"})
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peers.infinity [VENV]``: create the environment now (it is otherwise created on first use)."""
    argv = sys.argv[1:] if argv is None else argv
    venv = Path(argv[0]) if argv else DEFAULT_VENV
    env = ensure_installed(venv)
    print(json.dumps({"venv": str(env.venv), "install_s": env.install_s, "reused": env.reused,
                      "packages": package_versions(env)}))
    return 0


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main)
