"""The system packages each README command needs, checked (and installed when allowed) before any work starts.

``make demo`` and ``make test`` run ``python3.11 -m common.system_packages --for demo|test`` first, with any Python 3.11
and the standard library only (the virtual environment may not exist yet). A missing package is installed from
Debian's archive when this process may do so (root, or ``sudo`` without a password) and installing is not switched
off; otherwise the command stops within seconds, before any download or training, with the one command that installs
everything missing. ``--check-only`` (or ``PLATFORM_INSTALL_SYSTEM_PACKAGES=0``) never installs.

Why here and not in a README list: a new user's first run must not spend minutes on training and building only to
stop at the load test for want of Prometheus.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

INSTALL_SWITCH = "PLATFORM_INSTALL_SYSTEM_PACKAGES"


@dataclass(frozen=True)
class Requirement:
    """One thing a command needs from the system, how to tell it is there, and the Debian package that brings it."""

    what: str          # shown to the user
    package: str       # Debian/Ubuntu package
    commands: tuple[str, ...] = ()   # executables that must be on PATH
    library: str | None = None       # a shared library the dynamic loader must find
    why: str = ""

    def present(self) -> bool:
        if any(_find(command) is None for command in self.commands):
            return False
        return self.library is None or _loader_finds(self.library)


PROMETHEUS = Requirement("Prometheus and promtool", "prometheus", commands=("prometheus", "promtool"),
                         why="the demo's load test is watched by a real Prometheus; the rule tests run promtool")
LIBPYTHON = Requirement("the system libpython3.11", "libpython3.11", library="libpython3.11.so.1.0",
                        why="Triton's python-backend stub links it")
COMPOSE = Requirement("docker-compose", "docker-compose", commands=("docker-compose",),
                      why="the tests validate docker-compose.yml with `docker-compose config`")
NGINX = Requirement("nginx", "nginx-light", commands=("nginx",),
                    why="the local multi-replica test balances Triton replicas through a real nginx")

NEEDS: dict[str, tuple[Requirement, ...]] = {
    "demo": (LIBPYTHON, PROMETHEUS),
    "test": (LIBPYTHON, PROMETHEUS, COMPOSE, NGINX),
}


def _find(command: str) -> str | None:
    """On PATH, or in the sbin folders Debian installs daemons to (outside a non-root user's PATH)."""
    return shutil.which(command) or next((p for p in (f"/usr/sbin/{command}", f"/sbin/{command}")
                                          if os.access(p, os.X_OK)), None)


def _loader_finds(library: str) -> bool:
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                 if os.path.exists(p)), None)
    if ldconfig is None:
        return True  # no way to ask the loader (not Debian-like): let the first use report it
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    return library in listing


def missing(target: str) -> list[Requirement]:
    return [requirement for requirement in NEEDS[target] if not requirement.present()]


def install_command(requirements: list[Requirement]) -> str:
    packages = " ".join(dict.fromkeys(r.package for r in requirements))
    prefix = "" if os.geteuid() == 0 else "sudo "
    return f"{prefix}apt-get update && {prefix}apt-get install -y --no-install-recommends {packages}"


def _privilege() -> list[str] | None:
    """The prefix that runs apt-get as root here, or None when this process cannot (no root, no passwordless sudo)."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0:
        return ["sudo", "-n"]
    return None


def _install(prefix: list[str], requirements: list[Requirement]) -> bool:
    packages = list(dict.fromkeys(r.package for r in requirements))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing {' '.join(packages)} from Debian's archive (once per machine)", flush=True)
    for command in (prefix + ["apt-get", "update", "-qq"],
                    prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            return False
    # Debian's prometheus package may start a system service on :9090; the demo and the tests start their own
    if PROMETHEUS in requirements and shutil.which("service"):
        subprocess.run(prefix + ["service", "prometheus", "stop"], capture_output=True, check=False)
    return True


def ensure(target: str, install: bool = True) -> None:
    """Return when everything ``target`` needs is present; otherwise install it or exit with status 2 and one line."""
    absent = missing(target)
    if not absent:
        return
    allowed = install and os.environ.get(INSTALL_SWITCH, "1") != "0"
    prefix = _privilege() if allowed else None
    if prefix is not None and _install(prefix, absent):
        absent = missing(target)
        if not absent:
            return
    names = "; ".join(f"{r.what} ({r.why})" for r in absent)
    print(f"error: `make {target}` needs {names}, which this machine lacks. Install with: {install_command(absent)}",
          file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3.11 -m common.system_packages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--for", dest="target", choices=sorted(NEEDS), required=True, help="the README command")
    parser.add_argument("--check-only", action="store_true", help="never install; report what is missing")
    args = parser.parse_args(argv)
    started = time.monotonic()
    ensure(args.target, install=not args.check_only)
    print(f"system packages for `make {args.target}`: present ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
