"""The training run's configuration as one typed model: defaults here, overrides from a TOML file, then flags.

Everything a run does is decided by a :class:`RunConfig` that is validated before any work starts, so a negative
learning rate, a batch size of 0 or an unknown model stops the command with one line naming the field. The resolved
configuration is stored in every checkpoint and in the exported manifest.

Part of the configuration is the run's *identity* (:func:`identity`): the settings that decide which weights come out
(model, architecture, data, seed, optimiser, schedule, batching, precision). A run directory remembers its identity,
and resuming it with a different one is refused. The rest (epochs, checkpoint cadence, metrics port, patience) may
change between invocations of the same run, e.g. to extend training by a few epochs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from common.config import format_validation_error, load_config
from training import models
from training.models.base import StrictConfig


class OptimizerConfig(StrictConfig):
    """AdamW: decoupled weight decay is the usual choice for both CNNs and Transformers."""

    lr: float = Field(3e-3, gt=0, le=10.0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"both betas must be in [0, 1), got {list(value)}")
        return value


class ScheduleConfig(StrictConfig):
    """Learning-rate schedule: linear warm-up, then cosine/linear decay, constant, or ReduceLROnPlateau."""

    kind: Literal["cosine", "linear", "constant", "plateau"] = "cosine"
    warmup_steps: int | None = Field(None, ge=0, description="warm-up optimizer steps; overrides warmup_fraction")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="warm-up as a fraction of all optimizer steps")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine/linear decay floor, as a fraction of lr")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: multiply lr by this when stuck")
    plateau_patience: int = Field(1, ge=0, description="plateau: epochs without improvement before reducing lr")


class EarlyStoppingConfig(StrictConfig):
    patience: int = Field(5, ge=0, description="epochs without improvement before stopping; 0 disables")
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class CheckpointConfig(StrictConfig):
    keep_last: int = Field(3, ge=1, description="number of most recent checkpoints kept (the best is kept too)")
    every_steps: int = Field(0, ge=0, description="also checkpoint every N optimizer steps; 0 = only per epoch")
    every_minutes: float = Field(0.0, ge=0, description="also checkpoint every M minutes; 0 = off")
    export: Literal["best", "last"] = Field("best", description="which weights model.safetensors holds at the end")


class MetricsConfig(StrictConfig):
    port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off")
    host: str = Field("127.0.0.1", min_length=1,
                      description="address the metrics server binds; 0.0.0.0 only inside a container (compose)")


class ProgressConfig(StrictConfig):
    log_every_seconds: float = Field(10.0, gt=0, description="period of progress lines when stderr is not a terminal")
    bar: Literal["auto", "on", "off"] = Field("auto", description="tqdm bar: auto = only on a terminal")


class SidecarConfig(StrictConfig):
    """Long-running mode for the compose stack (see :mod:`training.sidecar`)."""

    enabled: bool = False
    watch_dir: Path | None = Field(None, description="directory polled for new labelled *.jsonl training data")
    poll_seconds: float = Field(30.0, gt=0, description="how often an idle sidecar looks for new data")
    epochs_per_round: int = Field(2, ge=1, description="epochs trained after each arrival of new data")
    default_checkpoint_minutes: float = Field(5.0, gt=0, description="checkpoint period when none is configured")


# Fields that do not change which weights a run produces; everything else is the run's identity.
OPERATIONAL_FIELDS = ("epochs", "eval_batch_size", "device", "threads", "early_stopping", "checkpoint", "metrics",
                      "progress", "sidecar")


class RunConfig(StrictConfig):
    model: str = Field(description="registered model name")
    spec: str | None = Field(None, description="a model spec defined outside the package, PATH/TO/FILE.py:ClassName "
                                               "(registered before `model` is checked; `model` defaults to its name)")
    seed: int = Field(0, ge=0, lt=2**31)
    epochs: int = Field(10, ge=1, description="total epochs of the run (a resumed run continues up to this)")
    batch_size: int = Field(64, ge=1, description="global micro-batch size, summed over all processes")
    eval_batch_size: int = Field(256, ge=1)
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step (gradient accumulation)")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables clipping")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision on CUDA: auto = bf16 if supported else fp16; always off on CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms (bit-exact resume on CPU)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: PyTorch's choice")
    max_train_samples: int | None = Field(None, ge=1, description="train on the first N training samples only")
    group_by_length: bool = Field(True, description="batch similar-length sequences together (less padding)")
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()
    progress: ProgressConfig = ProgressConfig()
    sidecar: SidecarConfig = SidecarConfig()
    arch: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's architecture config")
    data: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's data config")

    @model_validator(mode="before")
    @classmethod
    def _register_external_spec(cls, data: Any) -> Any:
        """``spec`` registers its class first, so that ``model`` (defaulting to the spec's name) can be checked."""
        if isinstance(data, dict) and data.get("spec"):
            spec_class = models.load_spec_file(str(data["spec"]))
            path, _sep, name = str(data["spec"]).rpartition(":")
            data = {**data, "spec": f"{Path(path).expanduser().resolve()}:{name}"}
            data.setdefault("model", spec_class.name)
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        known = models.names()
        if value not in known:
            raise ValueError(f"unknown model {value!r}; expected one of: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _model_configs_valid(self):
        from pydantic import ValidationError

        spec = models.get(self.model)
        for field, schema in (("arch", spec.Arch), ("data", spec.Data)):
            try:
                schema.model_validate(getattr(self, field))
            except ValidationError as exc:
                raise ValueError(format_validation_error(exc, field)) from None
        return self

    def arch_config(self):
        return models.get(self.model).Arch.model_validate(self.arch)

    def data_config(self):
        return models.get(self.model).Data.model_validate(self.data)


def resolve(path: str | Path | None, overrides: Mapping[str, Any]) -> RunConfig:
    """Defaults, then the file at ``path``, then ``overrides`` (dotted keys, ``None`` = not given)."""
    return load_config(RunConfig, path, overrides)


def identity_dict(config: RunConfig) -> dict[str, Any]:
    """The settings that determine the weights, with the model's arch/data defaults filled in."""
    data = config.model_dump(mode="json", exclude=set(OPERATIONAL_FIELDS))
    data["arch"] = config.arch_config().model_dump(mode="json")
    data["data"] = config.data_config().model_dump(mode="json")
    return data


def identity(config: RunConfig) -> str:
    """Short stable hash of :func:`identity_dict` (recorded in the run directory and in every checkpoint)."""
    blob = json.dumps(identity_dict(config), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two nested dicts, as ``path: old -> new``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(differences(a, b, path + "."))
        elif a != b:
            out.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
