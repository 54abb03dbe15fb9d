"""A small GPU exporter on NVML (nvidia-ml-py) for hosts without DCGM: ``python -m monitoring gpu-exporter``.

Why it exists: dcgm-exporter needs the DCGM host engine (and clashes with a second DCGM client such as Triton's own GPU
metrics on some setups), and Triton reports GPUs only while it runs. This exporter needs only the driver's NVML, reads
the GPUs at scrape time (no polling thread, no stale values) and, on a machine without a GPU or driver, keeps serving
and says so instead of failing::

    gpu_exporter_nvml_up 0
    gpu_exporter_gpus 0
    gpu_exporter_info{status="no_gpu",reason="NVML Shared Library Not Found",driver_version=""} 1

Per GPU (labels ``gpu`` index, ``gpu_uuid``, ``name``; MIG instances add ``gpu_instance``): ``gpu_utilization_ratio``
(0-1), ``gpu_memory_used_bytes``, ``gpu_memory_total_bytes``, ``gpu_power_watts``, ``gpu_power_limit_watts``,
``gpu_temperature_celsius``. A reading the device does not support (e.g. utilisation of a MIG instance) is left out;
any other NVML error increments ``gpu_exporter_read_errors_total{reading}`` and the rest of the scrape goes on.
"""
from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from common import cli
from common.errors import UserError
from common.foreground import stop_requested
from common.net import port_in_use

GPU_LABELS = ("gpu", "gpu_uuid", "name", "gpu_instance")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Device:
    handle: Any
    labels: tuple[str, str, str, str]      # GPU_LABELS values
    is_mig: bool


class NvmlCollector(Collector):
    """Reads every GPU (and MIG instance) through ``nvml`` (the pynvml module, or a stand-in with its API)."""

    def __init__(self, nvml: Any = None):
        if nvml is None:
            import pynvml as nvml
        self.nvml = nvml
        self._initialised = False
        self._lock = threading.Lock()
        self._read_errors: dict[str, int] = {}
        self.last_status: tuple[int, str] = (0, "not scraped yet")   # (GPUs, why none) of the latest scrape

    # -- NVML access -------------------------------------------------------------------------------------------------
    def _init(self) -> str | None:
        """Initialise NVML once; return why it is unavailable (retried at the next scrape), or None."""
        if self._initialised:
            return None
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            return _text(exc) or type(exc).__name__
        self._initialised = True
        return None

    def _read(self, reading: str, fn, *args) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) != self.nvml.NVML_ERROR_NOT_SUPPORTED:
                self._read_errors[reading] = self._read_errors.get(reading, 0) + 1
            return None

    def _devices(self) -> list[Device]:
        nvml = self.nvml
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(self._read("uuid", nvml.nvmlDeviceGetUUID, handle) or f"gpu-{index}")
            name = _text(self._read("name", nvml.nvmlDeviceGetName, handle) or "unknown")
            devices.append(Device(handle, (str(index), uuid, name, ""), False))
            mode = self._read("mig_mode", nvml.nvmlDeviceGetMigMode, handle)
            if not mode or mode[0] != nvml.NVML_DEVICE_MIG_ENABLE:
                continue
            for slot in range(self._read("mig_count", nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
                try:
                    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except nvml.NVMLError:
                    continue            # an empty MIG slot
                instance = self._read("gpu_instance_id", nvml.nvmlDeviceGetGpuInstanceId, mig)
                mig_name = _text(self._read("name", nvml.nvmlDeviceGetName, mig) or f"{name} MIG")
                devices.append(Device(mig, (str(index), uuid, mig_name, str(instance if instance is not None
                                                                               else slot)), True))
        return devices

    # -- exposition --------------------------------------------------------------------------------------------------
    def collect(self) -> Iterator:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator:
        nvml = self.nvml
        reason = self._init()
        devices: list[Device] = []
        driver = ""
        if reason is None:
            try:
                devices = self._devices()
                driver = _text(self._read("driver_version", nvml.nvmlSystemGetDriverVersion) or "")
            except nvml.NVMLError as exc:
                reason = f"NVML failed to list the GPUs: {_text(exc)}"
                devices = []
        nvml_up = reason is None
        gpus = sum(1 for d in devices if not d.is_mig)
        status = "ok" if nvml_up and gpus else "no_gpu"
        if nvml_up and not gpus:
            reason = "NVML found no GPU"
        self.last_status = (gpus, reason or "")

        yield GaugeMetricFamily("gpu_exporter_nvml_up", "1 when NVML answered this scrape, 0 when it is unavailable",
                                value=1 if nvml_up else 0)
        yield GaugeMetricFamily("gpu_exporter_gpus", "GPUs NVML reports on this host (0: none, or no NVML)",
                                value=gpus)
        info = InfoMetricFamily("gpu_exporter", "Whether this host has GPUs, and why not")
        info.add_metric([], {"status": status, "reason": reason or "", "driver_version": driver})
        yield info

        families = {
            "utilization": GaugeMetricFamily("gpu_utilization_ratio", "GPU busy time in the last sample period (0-1)",
                                             labels=GPU_LABELS),
            "memory_used": GaugeMetricFamily("gpu_memory_used_bytes", "GPU memory in use", labels=GPU_LABELS),
            "memory_total": GaugeMetricFamily("gpu_memory_total_bytes", "GPU memory installed", labels=GPU_LABELS),
            "power": GaugeMetricFamily("gpu_power_watts", "Board power draw", labels=GPU_LABELS),
            "power_limit": GaugeMetricFamily("gpu_power_limit_watts", "Enforced power limit", labels=GPU_LABELS),
            "temperature": GaugeMetricFamily("gpu_temperature_celsius", "GPU core temperature", labels=GPU_LABELS),
        }
        for device in devices:
            self._device_readings(device, families)
        yield from families.values()
        errors = CounterMetricFamily("gpu_exporter_read_errors", "NVML readings that failed (other than "
                                     "'not supported')", labels=("reading",))
        for reading, count in sorted(self._read_errors.items()):
            errors.add_metric([reading], count)
        yield errors

    def _device_readings(self, device: Device, families: dict[str, GaugeMetricFamily]) -> None:
        nvml, h, labels = self.nvml, device.handle, list(device.labels)
        memory = self._read("memory", nvml.nvmlDeviceGetMemoryInfo, h)
        if memory is not None:
            families["memory_used"].add_metric(labels, float(memory.used))
            families["memory_total"].add_metric(labels, float(memory.total))
        util = self._read("utilization", nvml.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            families["utilization"].add_metric(labels, util.gpu / 100.0)
        if device.is_mig:
            return                      # power and temperature belong to the physical GPU
        power = self._read("power", nvml.nvmlDeviceGetPowerUsage, h)
        if power is not None:
            families["power"].add_metric(labels, power / 1000.0)
        limit = self._read("power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        if limit is not None:
            families["power_limit"].add_metric(labels, limit / 1000.0)
        temperature = self._read("temperature", nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
        if temperature is not None:
            families["temperature"].add_metric(labels, float(temperature))


def registry(collector: NvmlCollector | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector or NvmlCollector())
    return reg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, like every endpoint of the platform; the "
                             "compose service passes 0.0.0.0 inside its container so Prometheus there can scrape it)")
    parser.add_argument("--port", type=int, default=9401, help="metrics port (default 9401)")
    parser.add_argument("--once", action="store_true",
                        help="print one scrape in the Prometheus text format and exit (no server)")


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m monitoring gpu-exporter", __doc__, add_arguments, argv, args)
    collector = NvmlCollector()
    reg = registry(collector)
    if args.once:
        sys.stdout.write(generate_latest(reg).decode())
        return 0
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port (expected 1-65535)")
    if port_in_use(args.port, args.host):
        raise UserError(f"port {args.port} on {args.host} is already in use; choose another with --port")
    server, thread = start_http_server(args.port, addr=args.host, registry=reg)
    with stop_requested() as stop:
        generate_latest(reg)
        gpus, reason = collector.last_status
        found = f"{gpus} GPU(s) found" if gpus else f"no GPU: {reason}"
        print(f"GPU exporter on http://{args.host}:{args.port}/metrics ({found})", flush=True)
        stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0
