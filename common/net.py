"""Small network helpers shared by the serving launcher, the tests and the benchmarks."""
from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 literal or a name that only resolves to IPv6 (``::1``, ``::``), IPv4 otherwise."""
    if ":" in host.strip("[]"):
        return socket.AF_INET6
    try:
        families = {info[0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror:
        return socket.AF_INET
    return socket.AF_INET if socket.AF_INET in families or not families else socket.AF_INET6


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) ``host:port``; IPv4 and IPv6 hosts alike."""
    host = host.strip("[]")
    with contextlib.closing(socket.socket(_family(host), socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (for tests and throw-away servers)."""
    host = host.strip("[]")
    with contextlib.closing(socket.socket(_family(host), socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_http_ok(url: str, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``url`` until it answers 200 or ``timeout`` seconds pass; returns whether it came up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url, timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
            return True
        time.sleep(interval)
    return False
