"""Data order and learning rate are functions of (seed, epoch, step) only: the basis of exact resume."""
from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from training.batches import BatchPlanner, eval_batches, sample_lengths
from training.config import ScheduleConfig
from training.schedule import LRSchedule


def dataset(n=103):
    return TensorDataset(torch.arange(n), torch.zeros(n))


def test_plan_is_a_function_of_seed_and_epoch():
    a, b = BatchPlanner(dataset(), 8, seed=1, rank=0, world_size=1), BatchPlanner(dataset(), 8, seed=1, rank=0, world_size=1)
    assert a.plan(3).batches == b.plan(3).batches
    assert a.plan(3).batches != a.plan(4).batches
    assert sorted(i for batch in a.plan(2).batches for i in batch) == list(range(103))


def test_two_ranks_share_each_global_batch_of_one_process():
    single = BatchPlanner(dataset(96), 8, seed=0, rank=0, world_size=1).plan(0).batches
    ranks = [BatchPlanner(dataset(96), 4, seed=0, rank=r, world_size=2).plan(0).batches for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for k, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][k] + ranks[1][k])


def test_length_grouping_cuts_padding_and_keeps_every_sample():
    lengths = [(i * 37) % 120 + 1 for i in range(1000)]
    texts = [torch.ones(n) for n in lengths]

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(texts)

        def __getitem__(self, i):
            return texts[i], torch.tensor(0)

    assert sample_lengths(Texts()) == lengths
    grouped = BatchPlanner(Texts(), 32, 0, 0, 1, lengths).plan(0).batches
    plain = BatchPlanner(Texts(), 32, 0, 0, 1, None).plan(0).batches
    padded = lambda plan: sum(len(b) * max(lengths[i] for i in b) for b in plan)
    assert padded(grouped) < 0.6 * padded(plain)
    assert sorted(i for b in grouped for i in b) == list(range(1000))


def test_eval_batches_cover_every_sample_once_over_ranks():
    shares = [eval_batches(101, 16, r, 3) for r in range(3)]
    seen = sorted(i for share in shares for batch in share for i in batch)
    assert seen == list(range(101))


def optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_warmup_then_cosine_to_the_floor():
    schedule = LRSchedule(optimizer(), ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1), base_lr=2.0)
    schedule.start_segment(0, 110)
    assert math.isclose(schedule.apply(0), 0.2) and math.isclose(schedule.apply(9), 2.0)
    assert math.isclose(schedule.apply(60), 2.0 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert math.isclose(schedule.apply(110), 0.2) and math.isclose(schedule.apply(500), 0.2)


def test_plateau_reduces_after_patience_and_state_round_trips():
    opt = optimizer()
    schedule = LRSchedule(opt, ScheduleConfig(kind="plateau", warmup_steps=0, plateau_factor=0.5, plateau_patience=1), 1.0)
    schedule.start_segment(0, 100)
    for value in (0.5, 0.6, 0.6, 0.6):
        schedule.epoch_end(value, higher_is_better=True)
    assert schedule.apply(50) == 0.5
    restored = LRSchedule(opt, schedule.config, 1.0)
    restored.load_state_dict(schedule.state_dict())
    assert restored.apply(50) == 0.5 and restored.state_dict() == schedule.state_dict()
