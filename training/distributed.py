"""PyTorch's own distributed engine, set up from what ``torchrun`` puts in the environment.

One process: no process group at all. Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` set),
a process group is initialised with NCCL when the process owns a CUDA device and gloo otherwise. Multi-node training
is the same command on every node with torchrun's rendezvous flags (see ``python -m training --help``).

Only rank 0 touches the run directory; the other ranks receive the checkpoint to resume from as bytes through the
process group, so nodes need no shared filesystem.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from common.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None: single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def any_true(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (used to stop all ranks together)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64 on the wire)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (objects are small control data or checkpoint bytes)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def describe(self) -> str:
        if not self.distributed:
            return f"single process on {self.device}"
        return f"rank {self.rank}/{self.world_size} (local {self.local_rank}) on {socket.gethostname()} {self.device}, {self.backend}"


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                            "start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(requested_device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group when started by torchrun; otherwise describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(requested_device, local_rank)
    if world_size <= 1:
        return DistContext(0, 0, 1, device, None)
    if "MASTER_ADDR" not in os.environ:
        raise UserError("WORLD_SIZE is set but MASTER_ADDR is not: start distributed runs with torchrun "
                        "(torchrun --nproc_per_node=N -m training ...)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes))
    return DistContext(rank, local_rank, world_size, device, backend)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
