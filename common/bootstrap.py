"""Create or repair the project's virtual environment: the `.venv` target of the Makefile.

Run with any Python 3.11 (``python3.11 -m common.bootstrap``); standard library only. Steps, each safe to repeat:

1. check the prerequisites (Python 3.11, free disk space, the system libpython the Triton stub links against) and stop
   with one sentence saying what to do when one is missing;
2. create ``.venv`` (or recreate it when its interpreter no longer runs);
3. ``pip install`` the project with the pinned constraints (pip skips what is already there, so an interrupted install
   simply resumes);
4. put Triton's python-backend stub in place;
5. write the stamp ``.venv/.installed`` last, holding a hash of the inputs. Make rebuilds when the inputs change, and
   a half-finished install has no stamp, so the next ``make`` redoes it instead of using a broken environment.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_FREE_GB = 6.0
INPUTS = ("pyproject.toml", "requirements.lock")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def inputs_hash() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def check_prerequisites(venv: Path) -> None:
    if sys.version_info[:2] != (3, 11):
        fail(
            f"Python 3.11 is required (found {sys.version.split()[0]} at {sys.executable}); "
            "install python3.11 or run `make PYTHON=/path/to/python3.11`"
        )
    try:
        import venv as _venv  # noqa: F401
        import ensurepip  # noqa: F401
    except ImportError:
        fail("this Python has no venv/ensurepip module; install it (Debian: apt-get install python3.11-venv)")
    probe = venv.parent if not venv.exists() else venv
    free_gb = shutil.disk_usage(probe).free / 2**30
    if free_gb < MIN_FREE_GB and not (venv / ".installed").exists():
        fail(f"only {free_gb:.1f} GiB free on {probe}; the environment needs about {MIN_FREE_GB:.0f} GiB: free some space and retry")
    libpython = "libpython3.11.so.1.0"
    found = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout if Path("/sbin/ldconfig").exists() else ""
    if found and libpython not in found:
        fail(
            f"Triton's python-backend stub needs the system {libpython}, which the loader cannot find; "
            "install it (Debian/Ubuntu: apt-get install libpython3.11)"
        )


def venv_python_works(venv: Path) -> bool:
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "(3, 11)"


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        fail(
            f"`{' '.join(cmd)}` failed with exit status {result.returncode}; fix the problem shown above and re-run "
            "`make .venv` (finished steps are skipped)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3.11 -m common.bootstrap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="where to create the environment (default: .venv)")
    args = parser.parse_args(argv)
    venv = Path(args.venv).resolve()
    stamp = venv / ".installed"
    wanted = inputs_hash()
    if stamp.exists() and stamp.read_text().strip() == wanted and venv_python_works(venv):
        print(f"{venv} is up to date", flush=True)
        return 0

    check_prerequisites(venv)
    stamp.unlink(missing_ok=True)
    if venv.exists() and not venv_python_works(venv):
        print(f"{venv} is broken (its python does not run); recreating it", flush=True)
        shutil.rmtree(venv)
    if not venv.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "pip==26.3"])
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
         "-c", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[test]"])
    run([python, "-m", "pip", "check"])
    run([python, "-c", "from common.triton_install import ensure_python_backend_stub as e; print('triton stub:', e())"])
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(wanted + "\n")
    os.replace(tmp, stamp)
    print(f"environment ready: {venv}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
