"""port_in_use sees listeners on IPv6 as well as IPv4 addresses."""
from __future__ import annotations

import socket

import pytest

from common.net import free_port, port_in_use


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
def test_port_in_use_sees_a_listener_on_either_family(host):
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((bare, 0))
    except OSError:
        pytest.skip(f"{bare} is not configured on this machine")
    sock.listen()
    port = sock.getsockname()[1]
    try:
        assert port_in_use(port, host)
    finally:
        sock.close()
    assert not port_in_use(port, host)


def test_free_port_on_ipv6_loopback_is_free():
    try:
        port = free_port("::1")
    except OSError:
        pytest.skip("::1 is not configured on this machine")
    assert not port_in_use(port, "::1")
