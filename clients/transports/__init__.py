"""The wire: one small interface over tritonclient's four clients (HTTP/gRPC × sync/asyncio).

:mod:`clients.transports.adapters` holds what differs between the protocols (how requests are built, how answers
are read), :mod:`clients.transports.sync` and :mod:`clients.transports.aio` what differs between blocking and asyncio
calls (how deadlines are enforced, how connections are kept). The client classes above them never look at the
protocol again.
"""
from clients.transports.adapters import ShmBinding

__all__ = ["ShmBinding"]
