"""``python -m deploy converge``: make every ready Triton replica serve the version the object store pins.

The rollout the builder Job runs after ``python -m builders publish --repository s3://...``: list the ready pods (the
headless Service ``triton-pods`` resolves to exactly the ready pods' addresses), load the family on each pod that
serves another version (explicit model control, with the admin token; Triton answers with the old version until the
new one is loaded), and list again, until every ready pod serves the pinned version. Listing again is what handles a
replica that became ready during the rollout: if it read the repository before the publication it serves the old
version and is loaded now; if after, it already serves the new one.
"""
from __future__ import annotations

import argparse
import json
import socket
import time
import urllib.request
from typing import Callable, Sequence

from common import cli
from common.errors import UserError


def model_versions(url: str, model: str) -> list[str] | None:
    """The ready versions of ``model`` on the Triton at ``url`` (host:port); None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/models/{model}", timeout=2) as response:
            return sorted(json.loads(response.read()).get("versions", []))
    except OSError:
        return None


def resolve(service: str) -> list[str]:
    """``host:port`` of every address ``host`` resolves to (a headless Service: one per ready pod)."""
    host, _, port = service.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--service {service!r}: expected HOST:PORT (e.g. triton-pods.inference.svc:8000)")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return []   # a headless Service without ready pods has no address: nothing to roll out to (yet)
        raise UserError(f"--service {service}: cannot resolve {host} ({exc.strerror})") from None
    return sorted({f"{info[4][0]}:{port}" for info in infos})


def converge(replicas: Callable[[], list[str]], members: Sequence[str], model: str, version: int,
             timeout_s: float, log: Callable[[str], None] = print) -> list[str]:
    """Load ``version`` on every replica ``replicas()`` lists until all serve it; returns the replicas at the end.

    A replica that does not answer (being killed or not started) is skipped: it is not ready, so it gets no traffic,
    and it reads the pinned version when it starts."""
    from builders.rollout import load_published

    deadline = time.monotonic() + timeout_s
    while True:
        current = replicas()
        states = {url: model_versions(url, model) for url in current}
        behind = [url for url, ready in states.items() if ready is not None and str(version) not in ready]
        if not behind:
            return current
        if time.monotonic() > deadline:
            raise UserError(f"replicas {', '.join(behind)} did not serve {model} version {version} within "
                            f"{timeout_s:.0f} s")
        for url in behind:
            load_published(url, members, model, version, max(1.0, deadline - time.monotonic()))
            log(f"{url}: {model} version {version} loaded")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", required=True, help="s3://[host:port/]bucket/prefix the replicas read")
    parser.add_argument("--package", required=True, help="the package/ folder that was published (its members)")
    parser.add_argument("--service", action="append", default=[],
                        help="HOST:PORT resolving to every ready replica (a headless Service); repeatable")
    parser.add_argument("--replica", action="append", default=[], help="HOST:PORT of one replica; repeatable")
    parser.add_argument("--timeout", type=float, default=600, help="seconds until every replica must agree")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m deploy converge", __doc__, add_arguments, argv, args)
    from builders.object_store import ObjectRepository
    from builders.repository import Package

    if not args.service and not args.replica:
        raise UserError("name the replicas: --service HOST:PORT (a headless Service) or --replica HOST:PORT")
    package = Package.read(args.package)
    version = ObjectRepository(args.repository).serving_version(package.primary)
    if version is None:
        raise UserError(f"{args.repository}: {package.primary} has no pinned version; publish it first "
                        "(python -m builders publish --repository s3://...)")

    def replicas() -> list[str]:
        return sorted({*args.replica, *(url for service in args.service for url in resolve(service))})

    done = converge(replicas, package.members, package.primary, version, args.timeout,
                    log=lambda line: print(line, flush=True))
    print(f"{len(done)} ready replica(s) serve {package.primary} version {version}"
          + (f": {', '.join(done)}" if done else " (none is ready: replicas that start read the pinned version)"),
          flush=True)
    return 0
