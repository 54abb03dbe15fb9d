"""``python -m clients.token_exec tritonserver [ARGS...]``: run a Triton whose admin APIs are behind
``$TRITON_ADMIN_TOKEN`` without the token staying in the host's process list.

Triton 2.51 takes the token only on its command line, and on a container host ``ps`` shows every container's command
line to every user of the host. ``python -m clients serve`` already overwrites the token in tritonserver's argument
memory once Triton has parsed its options; this wrapper does the same for a Triton started directly, as the GPU
compose stack starts NVIDIA's image: it appends the restriction flags (the same ones the launcher uses), starts the
server with its output through a pipe, overwrites the token as soon as Triton writes its first line (it has parsed its
options by then), relays the output, forwards SIGTERM/SIGINT, and exits with the server's status.

It needs only the standard library and :mod:`clients.admin_token`, so the Triton image carries those two files alone.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Sequence

from clients.admin_token import ADMIN_TOKEN_ENV, restriction_flags, scrub_from_cmdline

PROG = "python -m clients.token_exec"


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return 2


def _relay(process: subprocess.Popen, token: str, first_output: threading.Event, problems: list[str]) -> None:
    """Copy the server's output to ours; hide the token at its first output."""
    out = sys.stdout.buffer
    for line in iter(process.stdout.readline, b""):
        if not first_output.is_set():
            why = scrub_from_cmdline(process.pid, token)
            if why:
                problems.append(why)
                print(f"{PROG}: could not hide the admin token from the process list: {why}", file=sys.stderr,
                      flush=True)
            first_output.set()
        out.write(line)
        out.flush()
    first_output.set()


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command or command[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if command else 2
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        return _fail(f"{ADMIN_TOKEN_ENV} is not set: expected the secret that restricts Triton's admin APIs")
    given = [a for a in command if a.split("=", 1)[0] in ("--http-restricted-api", "--grpc-restricted-protocol")]
    if given:
        return _fail(f"{given[0].split('=', 1)[0]} is on the command line: leave the restriction to this wrapper, "
                     f"which takes the token from {ADMIN_TOKEN_ENV} and keeps it out of the process list")
    env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
    try:
        process = subprocess.Popen(command + restriction_flags(token), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        return _fail(f"cannot start {command[0]!r}: {exc.strerror or exc}")

    def forward(signum, _frame) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    first_output, problems = threading.Event(), []
    relay = threading.Thread(target=_relay, args=(process, token, first_output, problems), daemon=True)
    relay.start()
    code = process.wait()
    relay.join(timeout=5)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
