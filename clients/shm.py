"""Shared-memory fast path: tensors go through memory regions both processes map, not through the socket.

When the client and Triton share a host, a request then carries only region names and sizes; the server reads the
inputs and writes the outputs in place. ``system`` uses POSIX shared memory (``/dev/shm``, any host);
``cuda`` uses CUDA IPC memory on a GPU host (the server reads GPU memory directly).

Regions are expensive to create and register, so they are kept and reused: a :class:`ShmPool` holds *slots*, one
per request in flight, each with one region per tensor, grown when a larger tensor arrives. A slot is leased for one
call and returned afterwards, so concurrent calls (threads or asyncio tasks) never share a region. The pool only does
local memory work; registering regions with the server goes through the client's transport, so the same pool serves
sync and async clients. Triton forgets registrations when it restarts: :meth:`ShmPool.forget_registrations` marks
every region for registration again and the call is retried.

Only fixed-size numeric tensors take this path; strings and outputs whose shape the configuration does not fix stay
in the request.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from clients.errors import ClientError
from clients.model_info import ModelInfo
from clients.transports.adapters import ShmBinding

_ALIGN = 4096
_ids = itertools.count()


class ShmUnavailable(ClientError):
    """This host cannot provide the requested kind of shared memory."""


@dataclass
class Region:
    name: str  # the name Triton knows it by
    key: str  # system: the /dev/shm key; cuda: unused
    byte_size: int
    handle: object
    registered: bool = False


@dataclass
class Slot:
    regions: dict[str, Region] = field(default_factory=dict)  # "in:NAME" / "out:NAME" -> region


@dataclass
class Lease:
    """One call's use of a slot: the binding to send, and regions to register or retire first."""

    slot: Slot
    binding: ShmBinding
    retired: list[Region]
    output_specs: dict[str, tuple[np.dtype, tuple[int, ...]]]

    def unregistered(self) -> list[Region]:
        return [r for r in self.slot.regions.values() if not r.registered]


def _round_up(size: int) -> int:
    return max(_ALIGN, (size + _ALIGN - 1) // _ALIGN * _ALIGN)


def _shm_modules(kind: str, device_id: int = 0):
    """tritonclient's module for ``kind``; for CUDA, only once a usable GPU ``device_id`` is confirmed."""
    if kind == "cuda":
        try:
            import tritonclient.utils.cuda_shared_memory as module
            from tritonclient.utils.cuda_shared_memory._utils import call_cuda_function

            import cuda.bindings.runtime as cudart

            count = call_cuda_function(cudart.cudaGetDeviceCount)
        except Exception as exc:  # cuda-python missing, no driver, no device
            raise ShmUnavailable(f"CUDA shared memory is not available on this host ({exc}); it needs a GPU, the "
                                 "CUDA driver and the cuda-python package (use --shared-memory system or none)") from None
        if device_id >= count:
            raise ShmUnavailable(f"CUDA device {device_id} does not exist on this host ({count} GPU(s) visible)")
        return module
    import tritonclient.utils.shared_memory as module

    return module


class ShmPool:
    """Slots of reusable shared-memory regions for one client (see the module docstring)."""

    def __init__(self, kind: str = "system", device_id: int = 0, max_slots: int = 32, prefix: str | None = None):
        if kind not in ("system", "cuda"):
            raise ValueError(f"shared memory kind must be 'system' or 'cuda', got {kind!r}")
        self.kind = kind
        self.device_id = device_id
        self.max_slots = max_slots
        self.prefix = prefix or f"ic{os.getpid()}_{next(_ids)}"
        self._module = _shm_modules(kind, device_id)
        self._free: list[Slot] = []
        self._all: list[Slot] = []
        self._lock = threading.Lock()
        self._names = itertools.count()

    # -- what travels through shared memory -----------------------------------------------------------------------
    @staticmethod
    def output_specs(info: ModelInfo, outputs: Iterable[str], batch: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Outputs whose size is known before the call: numeric, every dimension fixed (the batch one excepted)."""
        specs = {}
        for name in outputs:
            spec = info.output(name)
            if spec is None or spec.is_bytes:
                continue
            shape = list(spec.shape)
            if info.max_batch_size > 0 and shape:
                shape[0] = batch
            if all(d >= 0 for d in shape):
                specs[name] = (spec.numpy_dtype, tuple(shape))
        return specs

    # -- leases ---------------------------------------------------------------------------------------------------
    def lease(self, arrays: dict[str, np.ndarray], output_specs: dict[str, tuple[np.dtype, tuple[int, ...]]]
              ) -> Lease | None:
        """Take a slot, size its regions for these tensors and copy the inputs in.

        None when ``max_slots`` calls already hold one: that call sends its tensors in the request instead, so
        memory stays bounded however many calls are in flight.
        """
        with self._lock:
            if self._free:
                slot = self._free.pop()
            elif len(self._all) < self.max_slots:
                slot = Slot()
                self._all.append(slot)
            else:
                return None
        binding, retired = ShmBinding(), []
        try:
            for name, array in arrays.items():
                if array.dtype.kind in ("O", "U", "S"):
                    continue  # strings stay in the request
                array = np.ascontiguousarray(array)
                region = self._region(slot, f"in:{name}", array.nbytes, retired)
                self._module.set_shared_memory_region(region.handle, [array])
                binding.inputs[name] = (region.name, array.nbytes)
            for name, (dtype, shape) in output_specs.items():
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                region = self._region(slot, f"out:{name}", nbytes, retired)
                binding.outputs[name] = (region.name, nbytes)
        except BaseException:
            self.give_back(slot)
            raise
        return Lease(slot, binding, retired, output_specs)

    def read_outputs(self, lease: Lease, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
        """Copy the outputs the server wrote (copies: the regions are reused by the next call)."""
        arrays = {}
        for name, shape in shapes.items():
            dtype = lease.output_specs[name][0]
            region = lease.slot.regions[f"out:{name}"]
            view = self._module.get_contents_as_numpy(region.handle, dtype, shape)
            arrays[name] = np.array(view, copy=True)
            del view  # a live view would keep the mapping exported and block destroying the region
        return arrays

    def release(self, lease: Lease) -> None:
        self.give_back(lease.slot)

    def give_back(self, slot: Slot) -> None:
        with self._lock:
            self._free.append(slot)

    def forget_registrations(self) -> None:
        """After a server restart: every region must be registered again before use."""
        with self._lock:
            for slot in self._all:
                for region in slot.regions.values():
                    region.registered = False

    def destroy(self, region: Region) -> None:
        """Free the local memory of a region (unregister it from the server first)."""
        with contextlib.suppress(Exception):
            self._module.destroy_shared_memory_region(region.handle)

    def close(self) -> list[Region]:
        """Empty the pool; returns the regions so the caller can unregister them, then call :meth:`destroy`."""
        with self._lock:
            regions = [r for slot in self._all for r in slot.regions.values()]
            self._all, self._free = [], []
        return regions

    # -- regions --------------------------------------------------------------------------------------------------
    def _region(self, slot: Slot, key: str, nbytes: int, retired: list[Region]) -> Region:
        region = slot.regions.get(key)
        if region is not None and region.byte_size >= nbytes:
            return region
        if region is not None:
            retired.append(region)
        size = _round_up(nbytes)
        name = f"{self.prefix}_{next(self._names)}"
        if self.kind == "cuda":
            handle = self._module.create_shared_memory_region(name, size, self.device_id)
            region = Region(name, "", size, handle)
        else:
            shm_key = f"/{name}"
            handle = self._module.create_shared_memory_region(name, shm_key, size, create_only=True)
            region = Region(name, shm_key, size, handle)
        slot.regions[key] = region
        return region

    def raw_handle(self, region: Region) -> bytes:
        return self._module.get_raw_handle(region.handle)


def is_regions_lost(message: str) -> bool:
    """Triton's answer when a request names a region it does not know (e.g. after a restart)."""
    lowered = message.lower()
    return "shared memory region" in lowered and ("unable to find" in lowered or "not found" in lowered)


def is_already_registered(message: str) -> bool:
    """Triton's answer when a region name is registered twice (an earlier attempt's registration did arrive)."""
    lowered = message.lower()
    return "shared memory region" in lowered and "already in manager" in lowered
