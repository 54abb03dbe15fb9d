"""CPU used by the server and by the load generator during a measurement.

On a machine where both share two cores, a throughput figure means little without knowing whether the load generator
was saturated: every result row carries the CPU seconds per wall second (1.0 = one full core) of both sides.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil


def listening_pid(port: int) -> int | None:
    """PID of the local process listening on TCP ``port`` (the server), if it can be seen."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


def _tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class CpuMeter:
    """Measures CPU cores used by process trees (each pid with its children, e.g. Triton and its python stubs)."""

    pids: dict[str, int | None]
    _start: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, list[psutil.Process]] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> "CpuMeter":
        psutil.cpu_percent(interval=None)  # primes the machine-wide counter; stop() reads the usage since now
        self._t0 = time.perf_counter()
        for name, pid in self.pids.items():
            self._procs[name] = _tree(pid) if pid else []
            self._start[name] = _cpu_seconds(self._procs[name])
        return self

    def stop(self) -> dict[str, float | None]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cores = {}
        for name in self.pids:
            procs = self._procs.get(name) or []
            cores[name] = round((_cpu_seconds(procs) - self._start[name]) / wall, 3) if procs else None
        cores["machine"] = round(psutil.cpu_percent(interval=None) / 100.0 * (psutil.cpu_count() or 1), 3)
        return cores


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished (waited-for) children: load generators we ran as subprocesses."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads): in-process benchmarks."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
