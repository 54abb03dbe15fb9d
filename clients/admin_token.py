"""The admin token of a locally started Triton: made per start, kept in a file only its user can read, and kept out of
the process list.

Triton's model-control API can load a model with a ``file:`` override, i.e. make the server run Python that the caller
sends. ``python -m clients serve`` therefore always restricts the model-repository, shared-memory, trace and logging
APIs. When ``$TRITON_ADMIN_TOKEN`` is not set it makes a fresh token for each start and writes it, mode 0600 in a 0700
directory, to ``<token dir>/port-<P>.token`` for the server's HTTP and gRPC ports (token dir: ``$TRITON_ADMIN_TOKEN_DIR``,
default ``~/.cache/inference-platform/triton-admin``). The client library and the builders' live rollout find it there
by the port of the URL they talk to (only for loopback URLs: a token is never sent to another host unless the caller
passes it). The launcher removes the files when the server stops.

Triton 2.51 takes the token only on its command line (``--http-restricted-api=API:KEY=VALUE``; it reads no file and no
environment variable for it), where ``ps`` shows it to every user of the host. :func:`scrub_from_cmdline` overwrites it
in the server's argument memory once Triton has parsed its options (Triton keeps its own copy), so ``ps`` and
``/proc/PID/cmdline`` show ``x`` characters from then on; it is visible only in the first moments of a start.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterable

TOKEN_DIR_ENV = "TRITON_ADMIN_TOKEN_DIR"
ADMIN_TOKEN_ENV = "TRITON_ADMIN_TOKEN"
ADMIN_HEADER = "triton-admin-token"  # HTTP header; over gRPC, metadata ``triton-grpc-protocol-triton-admin-token``
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}


def restriction_flags(token: str) -> list[str]:
    """The tritonserver flags that put the admin APIs behind ``token`` on both protocols."""
    restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={token}"
    return [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_dir() -> Path:
    configured = os.environ.get(TOKEN_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "inference-platform" / "triton-admin"


def token_file(port: int, directory: Path | None = None) -> Path:
    return (directory or token_dir()) / f"port-{int(port)}.token"


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_uid == os.getuid():
        directory.chmod(0o700)


def write_token(token: str, ports: Iterable[int], directory: Path | None = None) -> list[Path]:
    """Write ``token`` for every port, each file created 0600 and renamed into place (never readable by others)."""
    directory = directory or token_dir()
    _private_dir(directory)
    written = []
    for port in ports:
        target = token_file(port, directory)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)  # mkstemp creates the file 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        written.append(target)
    return written


def remove_token_files(paths: Iterable[Path], token: str) -> None:
    """Remove the files this start wrote, unless a later start on the same port has replaced them."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8").strip() == token:
                path.unlink()


def _split_url(url: str) -> tuple[str, int | None]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host, int(port) if port.isdigit() else None


def read_token_for(url: str, directory: Path | None = None) -> str | None:
    """The token a local ``clients serve`` wrote for the server at ``url`` (HOST:PORT), or None.

    Only loopback URLs are looked up, and only a file owned by this user and unreadable by others is trusted."""
    host, port = _split_url(url)
    if port is None or host not in LOCAL_HOSTS:
        return None
    path = token_file(port, directory)
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _argument_range(pid: int) -> tuple[int, int]:
    """``arg_start`` and ``arg_end`` of a process (fields 48 and 49 of /proc/PID/stat, see proc(5))."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd on; the command name may hold spaces
    return int(fields[48 - 3]), int(fields[49 - 3])


def scrub_from_cmdline(pid: int, secret: str) -> str | None:
    """Overwrite every copy of ``secret`` in the argument memory of our child ``pid`` with ``x``.

    Returns None on success, else why it could not (e.g. the kernel refuses writes to /proc/PID/mem)."""
    needle = secret.encode()
    try:
        start, end = _argument_range(pid)
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            arguments = mem.read(end - start)
            offset = arguments.find(needle)
            while offset >= 0:
                mem.seek(start + offset)
                mem.write(b"x" * len(needle))
                offset = arguments.find(needle, offset + len(needle))
        if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
            return "the token is still in /proc/PID/cmdline after overwriting it"
    except (OSError, ValueError, IndexError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
