"""Where the real Triton Inference Server lives on a CPU machine, and how to make its python backend work.

The PyPI wheel ``nvidia-pytriton`` ships Triton 2.51 (``pytriton/tritonserver/bin/tritonserver``) with the python
backend. Two things must be true before that backend can load a model:

* the stub ``python_backend_stubs/3.X/triton_python_backend_stub`` (X = this interpreter's minor version) sits in
  ``backends/python/``. Its RPATH finds the wheel's bundled libraries relative to that location, so it is copied into
  the wheel's own ``backends/python`` folder rather than elsewhere;
* the stub starts Python in isolated mode with the system ``libpython3.X.so`` and ignores ``PYTHONPATH``; it finds the
  virtual environment's packages (numpy, onnxruntime) only when the venv's ``bin/`` is first on ``PATH``.

This module only uses the standard library so that the bootstrap can call it right after installing the wheel.
"""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


class TritonNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonInstall:
    root: Path  # .../site-packages/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.root / "backends"

    @property
    def stub_source(self) -> Path:
        return self.root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"

    @property
    def stub(self) -> Path:
        return self.backend_dir / "python" / "triton_python_backend_stub"


def locate() -> TritonInstall:
    """Find the tritonserver that ships in the nvidia-pytriton wheel of this interpreter's environment."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    root = purelib / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonNotInstalled(
            f"no tritonserver under {root}: install the nvidia-pytriton==0.7.0 wheel (run `make .venv`)"
        )
    return TritonInstall(root)


def ensure_python_backend_stub(install: TritonInstall | None = None) -> Path:
    """Copy the python-backend stub for this Python version into place (idempotent) and return its path."""
    install = install or locate()
    if not install.stub_source.is_file():
        raise TritonNotInstalled(
            f"the wheel has no python-backend stub for Python {sys.version_info.major}.{sys.version_info.minor} "
            f"at {install.stub_source}"
        )
    if not install.stub.is_file() or install.stub.stat().st_size != install.stub_source.stat().st_size:
        tmp = install.stub.with_suffix(".tmp")
        shutil.copy2(install.stub_source, tmp)
        os.replace(tmp, install.stub)
    return install.stub


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the tritonserver process: this venv's ``bin/`` first on PATH so the stub finds its packages."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([venv_bin, *parts])
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env
