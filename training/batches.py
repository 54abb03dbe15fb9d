"""Which samples go into which micro-batch, decided only by (seed, epoch, rank): the basis of exact resume.

Each epoch's order comes from torch's :class:`~torch.utils.data.DistributedSampler` (shuffled with a generator seeded
by ``seed + epoch``; every process takes its own interleaved share, all shares the same length). On top of it,
sequences of similar length are optionally grouped: the rank's share is cut into chunks of ``group_factor`` batches,
each chunk is sorted by length and split into batches, and the batches of a chunk are shuffled again from the same
(seed, epoch, rank) generator. That removes most of the padding of variable-length text without giving up shuffling.

Because nothing here draws from the global generators, a run resumed at micro-batch ``k`` of an epoch simply
rebuilds the epoch's plan and skips the first ``k`` batches: it sees exactly the batches the interrupted run would
have seen. (torch's DataLoader is deliberately not used: creating its iterator draws from the global generator,
which would shift every later dropout mask after a resume.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler

from training.rng import derive_seed


def sample_lengths(dataset: Dataset) -> list[int] | None:
    """Length of each sample's first input (sequence length for text); ``None`` when all are equal or unknown."""
    lengths = []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        first = dataset[i][0]
        if not isinstance(first, torch.Tensor):
            return None
        lengths.append(int(first.shape[0]) if first.dim() else 1)
    return lengths if len(set(lengths)) > 1 else None


@dataclass(frozen=True)
class EpochPlan:
    """The micro-batches (lists of dataset indices) one process trains on in one epoch."""

    batches: list[list[int]]

    def __len__(self) -> int:
        return len(self.batches)


class BatchPlanner:
    """Plans every epoch's micro-batches for one process of a (possibly distributed) run."""

    def __init__(self, dataset: Dataset, per_rank_batch: int, seed: int, rank: int, world_size: int,
                 lengths: Sequence[int] | None = None, group_factor: int = 50):
        self.per_rank_batch = per_rank_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lengths = lengths
        self.group_factor = group_factor
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=False)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.sampler.num_samples / self.per_rank_batch)

    def plan(self, epoch: int) -> EpochPlan:
        self.sampler.set_epoch(epoch)
        indices = list(iter(self.sampler))
        size = self.per_rank_batch
        if self.lengths is None:
            return EpochPlan([indices[i:i + size] for i in range(0, len(indices), size)])
        generator = torch.Generator().manual_seed(derive_seed("length-groups", self.seed, epoch, self.rank))
        batches: list[list[int]] = []
        chunk = size * self.group_factor
        for start in range(0, len(indices), chunk):
            group = sorted(indices[start:start + chunk], key=lambda i: self.lengths[i])
            pieces = [group[i:i + size] for i in range(0, len(group), size)]
            order = torch.randperm(len(pieces), generator=generator).tolist()
            batches.extend(pieces[j] for j in order)
        return EpochPlan(batches)


def eval_batches(n: int, batch_size: int, rank: int, world_size: int,
                 lengths: Sequence[int] | None = None) -> list[list[int]]:
    """This process's share of an evaluation pass: every sample exactly once over all processes (no padding)."""
    order = sorted(range(n), key=lambda i: lengths[i]) if lengths is not None else list(range(n))
    mine = order[rank::world_size]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def collate_indices(dataset: Dataset, indices: Sequence[int], collate: Callable[[list[Any]], Any]):
    return collate([dataset[i] for i in indices])
