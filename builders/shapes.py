"""Optimization profiles: the min/opt/max shape of every input, derived from the manifest and declared ranges.

The manifest names each dynamic axis (``batch``, ``sequence``); the configuration declares a range per name and per
profile (:class:`builders.settings.ProfileConfig`). From the two this module derives concrete shapes that are used in
four places, so they can never disagree: the TensorRT optimization profiles, the plan metadata, ``max_batch_size`` and
the warm-up requests of every generated ``config.pbtxt``, and the per-request shape limits of the CPU runtime.
Everything here is pure Python so it is tested on machines without TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from common.errors import UserError
from common.manifest import TensorSpec
from builders.settings import BuildConfig, ShapeRange

BATCH = "batch"


@dataclass(frozen=True)
class InputRange:
    """Full shapes (batch first) of one input within one profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class Profile:
    index: int
    inputs: dict[str, InputRange]

    @property
    def batch(self) -> tuple[int, int, int]:
        first = next(iter(self.inputs.values()))
        return first.min[0], first.opt[0], first.max[0]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "inputs": {name: r.to_dict() for name, r in self.inputs.items()}}


def _default_range(dim: str, input_name: str, preprocessing: dict[str, Any], default_opt: int) -> ShapeRange:
    limit = preprocessing.get("max_length")
    if limit is None:
        raise UserError(f"input {input_name!r} has a dynamic axis {dim!r} with no declared range: add "
                        f"shapes.profiles[].dims.{dim} = {{min, opt, max}} to the builders configuration")
    limit = int(limit)
    return ShapeRange(min=1, opt=min(default_opt, limit), max=limit)


def derive_profiles(inputs: Sequence[TensorSpec], preprocessing: dict[str, Any], config: BuildConfig) -> list[Profile]:
    """Concrete min/opt/max shapes per input and profile; a :class:`UserError` names the field that does not fit."""
    serving = config.serving
    symbols = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    for spec in inputs:
        if not spec.shape or spec.shape[0] != BATCH:
            raise UserError(f"manifest input {spec.name!r}: shape {list(spec.shape)} must start with the dynamic "
                            f"axis {BATCH!r} (Triton batches along the first axis)")
    profiles = []
    for index, declared in enumerate(config.shapes.profiles):
        where = f"shapes.profiles[{index}]"
        unknown = sorted(set(declared.dims) - symbols)
        if BATCH in declared.dims:
            raise UserError(f"{where}.dims.batch: declare the batch range as {where}.batch instead")
        if unknown:
            raise UserError(f"{where}.dims: {', '.join(unknown)} is not an axis of any input "
                            f"(the manifest's dynamic axes are: {', '.join(sorted(symbols))})")
        batch = declared.batch or ShapeRange(min=1, opt=min(serving.opt_batch_size, serving.max_batch_size),
                                             max=serving.max_batch_size)
        if batch.max > serving.max_batch_size:
            raise UserError(f"{where}.batch.max {batch.max} exceeds serving.max_batch_size {serving.max_batch_size}")
        ranges: dict[str, InputRange] = {}
        for spec in inputs:
            lo, mid, hi = [], [], []
            for axis, dim in enumerate(spec.shape):
                if axis == 0:
                    r = batch
                elif isinstance(dim, str):
                    r = declared.dims.get(dim) or _default_range(dim, spec.name, preprocessing,
                                                                  config.shapes.default_opt_length)
                else:
                    r = ShapeRange(min=dim, opt=dim, max=dim)
                lo.append(r.min), mid.append(r.opt), hi.append(r.max)
            ranges[spec.name] = InputRange(tuple(lo), tuple(mid), tuple(hi))
        profiles.append(Profile(index, ranges))
    largest = max(p.batch[2] for p in profiles)
    if largest < serving.max_batch_size:
        raise UserError(f"serving.max_batch_size {serving.max_batch_size} exceeds the largest profile batch maximum "
                        f"{largest} (shapes.profiles[].batch.max): Triton would accept batches no engine can run")
    return profiles


def max_dims(profiles: Sequence[Profile]) -> dict[str, list[int]]:
    """Per input, the largest size of every non-batch axis over all profiles (the CPU runtime's request limits)."""
    limits: dict[str, list[int]] = {}
    for profile in profiles:
        for name, r in profile.inputs.items():
            current = limits.setdefault(name, list(r.max[1:]))
            limits[name] = [max(a, b) for a, b in zip(current, r.max[1:])]
    return limits


@dataclass(frozen=True)
class WarmupSample:
    name: str
    batch_size: int
    dims: dict[str, tuple[int, ...]]  # per input, without the batch axis


def warmup_samples(profiles: Sequence[Profile], batch_sizes: Sequence[int], max_batch_size: int) -> list[WarmupSample]:
    """One warm-up request per profile and batch bucket (at the opt sizes), plus one at each profile's maximum."""
    samples = []
    for profile in profiles:
        lo, _opt, hi = profile.batch
        hi = min(hi, max_batch_size)
        buckets = sorted({b for b in batch_sizes if lo <= b <= hi} | {hi})
        for b in buckets:
            samples.append(WarmupSample(f"profile{profile.index}_batch{b}", b,
                                        {n: tuple(r.opt[1:]) for n, r in profile.inputs.items()}))
        if any(r.max[1:] != r.opt[1:] for r in profile.inputs.values()):
            samples.append(WarmupSample(f"profile{profile.index}_max", hi,
                                        {n: tuple(r.max[1:]) for n, r in profile.inputs.items()}))
    return samples
