"""The training loop: AdamW, warm-up + decay (or plateau), clipping, accumulation, AMP on CUDA, DDP, exact resume.

One :class:`Trainer` drives one run directory. ``setup`` loads the data, builds the model and resumes from the newest
good checkpoint; ``train`` runs epochs up to a target, checkpointing at every epoch end (and every N steps / M minutes
when configured); ``finish`` writes the final export. The sidecar (:mod:`training.sidecar`) calls the same methods in
rounds.

Exactness: the batches of an epoch come from (seed, epoch) only (:mod:`training.batches`), checkpoints are taken at
optimizer-step boundaries with every generator's state (:mod:`training.rng`), and the learning rate is a function of
the step (:mod:`training.schedule`). A run killed at any point and resumed therefore ends with the same bits, on CPU,
as one that was never interrupted.

Failure rules: a non-finite loss or gradient stops the run with an error naming the optimizer step, before anything
is written for that step; only finite weights are ever checkpointed or exported. Under DDP only rank 0 touches the
run directory, and every decision that ends or checkpoints the run is taken by all ranks together.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from common.errors import UserError
from common.files import atomic_write_text
from common.manifest import MANIFEST_NAME, CheckpointRef, read_manifest
from training import incoming, models, rng
from training.batches import BatchPlanner, collate_indices, eval_batches, sample_lengths
from training.checkpoint import CheckpointInvalid, CheckpointStore, checkpoint_name, decode, parse_name
from training.config import RunConfig, identity
from training.distributed import DistContext
from training.export import export_weights
from training.plots import plot_history
from training.progress import EpochProgress
from training.rundir import RunDir
from training.schedule import LRSchedule
from training.telemetry import TrainingMetrics

METRICS_LOG = "metrics.jsonl"
CURVES_PNG = "training_curves.png"

# Fault injection for tests: ``TRAINING_FAULT_KILL_AFTER_STEP=K`` makes the process SIGKILL itself right after
# optimizer step K (and the checkpoint, if one was due at K): a kill -9 at a deterministic point of the run.
_KILL_AFTER_STEP = int(os.environ["TRAINING_FAULT_KILL_AFTER_STEP"]) if os.environ.get(
    "TRAINING_FAULT_KILL_AFTER_STEP") else None


class TrainingDiverged(UserError):
    """The loss or the gradients became NaN/inf; nothing was written for the failing step."""


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # epoch to train next (0-based); equals the number of completed epochs
    position: int = 0  # micro-batches of ``epoch`` already trained
    step: int = 0  # optimizer steps done
    samples_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    bad_epochs: int = 0
    finished: bool = False
    stop_reason: str | None = None
    epochs_target: int = 0
    incoming: list[dict[str, Any]] = field(default_factory=list)  # sidecar data files folded into the train set


@dataclass
class RoundResult:
    reason: str  # "epochs" | "early_stopping" | "signal"
    message: str


def _log(ctx: DistContext, message: str, all_ranks: bool = False) -> None:
    if ctx.is_main or all_ranks:
        prefix = f"[rank {ctx.rank}] " if ctx.distributed else ""
        print(prefix + message, file=sys.stderr, flush=True)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes the current optimizer step, checkpoints and stops."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (the last checkpoint is still good)
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested} received: finishing the current step, writing a checkpoint, then stopping "
              "(Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def configure_torch(config: RunConfig, device: torch.device) -> None:
    """Thread count and deterministic kernels (exact resume needs them; warn-only on CUDA, where a few ops lack one)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not config.deterministic
    torch.use_deterministic_algorithms(config.deterministic, warn_only=device.type == "cuda")
    # Deterministic mode also fills every new tensor with NaN (a debugging aid against reading uninitialised memory);
    # our kernels never do, and the fills made a Transformer step several times slower on CPU.
    torch.utils.deterministic.fill_uninitialized_memory = False


def amp_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for full precision (always on CPU)."""
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "bf16" or (config.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings; never biases or normalisation scales (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, ctx: DistContext, stop: StopFlag | None = None):
        self.config = config
        self.ctx = ctx
        self.run = RunDir(run_dir)
        self.stop = stop or StopFlag()
        self.spec = models.get(config.model)
        self.arch = config.arch_config()
        self.data_cfg = config.data_config()
        self.identity = identity(config)
        self.state = Progress(epochs_target=config.epochs)
        self.store = CheckpointStore(self.run.checkpoints, self.identity, warn=lambda m: _log(ctx, m))
        self.metrics: TrainingMetrics | None = None
        self.last_checkpoint: tuple[str, str] | None = None  # (name, sha256)
        self.last_checkpoint_time = time.monotonic()
        self.train_set: Dataset | None = None
        self.partial = {"loss_sum": 0.0, "samples": 0}  # this rank's running train-loss sums of the current epoch

    # ------------------------------------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ctx, config = self.ctx, self.config
        if config.amp != "off" and ctx.device.type != "cuda" and config.amp != "auto":
            _log(ctx, f"note: --amp {config.amp} applies to CUDA only; this run is float32 on {ctx.device}")
        if config.batch_size % ctx.world_size:
            raise UserError(f"--batch-size {config.batch_size} is the global batch and must be divisible by the "
                            f"number of processes ({ctx.world_size})")

        def start_metrics_and_claim() -> None:
            # a fine-tuning run is labelled with the name it is published under (its manifest's model)
            label = getattr(self.arch, "name", None) or config.model
            self.metrics = TrainingMetrics(label, config.metrics.port, config.metrics.host)
            if config.metrics.port:
                _log(ctx, f"Prometheus metrics on http://{config.metrics.host}:{config.metrics.port}/metrics")
            self._claim()

        self._main_only("claiming the run directory", start_metrics_and_claim)
        configure_torch(config, ctx.device)
        started = time.monotonic()
        self.splits = self.spec.load_data(self.data_cfg, self.arch)
        base_train: Dataset = self.splits.train
        if config.max_train_samples and config.max_train_samples < len(base_train):  # type: ignore[arg-type]
            base_train = Subset(base_train, range(config.max_train_samples))
        self.base_train = base_train
        _log(ctx, f"data: {config.model} train {len(base_train)} / val {len(self.splits.val)} / test "
                  f"{len(self.splits.test)} samples (version {self.splits.version[:12]}, "
                  f"{time.monotonic() - started:.1f} s)")
        self.val_lengths = sample_lengths(self.splits.val)
        rng.seed_everything(config.seed)
        self.module = self.spec.build(self.arch).to(ctx.device)
        if ctx.rank:  # each rank draws its own dropout masks; rank 0 keeps the single-process stream
            rng.seed_everything(rng.derive_seed(config.seed, "rank", ctx.rank) % 2**31)
        self.model: nn.Module = self.module
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        opt = config.optimizer
        self.optimizer = torch.optim.AdamW(param_groups(self.module, opt.weight_decay), lr=opt.lr, betas=opt.betas,
                                           eps=opt.eps)
        self.schedule = LRSchedule(self.optimizer, config.schedule, opt.lr)
        self.autocast_dtype = amp_dtype(config, ctx.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        resumed = self._resume()
        self._rebuild_train_set()
        if resumed:  # a raised --epochs stretches the decay horizon; a lowered one just ends the run sooner
            self.schedule.extend_segment(self.steps_for_epochs(self.state.epochs_target) - self.schedule.segment_start)
        else:
            self.schedule.start_segment(0, self.steps_for_epochs(self.state.epochs_target))
        params = sum(p.numel() for p in self.module.parameters())
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        counts = f"{params:,} parameters" + (f" ({trainable:,} trainable)" if trainable != params else "")
        precision = {None: "float32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}
        _log(ctx, f"model {config.model}: {counts}, {precision[self.autocast_dtype]}, "
                  f"{ctx.describe()}, global batch {config.batch_size} x {config.accumulate} accumulation")
        if ctx.distributed:
            _log(ctx, f"pid {os.getpid()} on {socket.gethostname()}", all_ranks=True)

    def _claim(self) -> None:
        resumed = self.run.claim(self.config)
        _log(self.ctx, f"{'resuming' if resumed else 'new run in'} {self.run.path} (run identity {self.identity})")

    def _main_only(self, what: str, action: Callable[[], Any]) -> Any:
        """Run ``action`` on rank 0; a failure there is raised on every rank instead of leaving them waiting."""
        if not self.ctx.distributed:
            return action()
        error, result = None, None
        if self.ctx.is_main:
            try:
                result = action()
            except UserError as exc:
                error = str(exc)
            except Exception as exc:  # report it on all ranks, then re-raise the original on rank 0
                self.ctx.broadcast(f"{what} failed on rank 0: {exc}")
                raise
        error = self.ctx.broadcast(error)
        if error:
            raise UserError(error)
        return result

    def _rebuild_train_set(self) -> None:
        """The training set (base split plus folded-in sidecar data) and its batch planner."""
        parts = [self.base_train]
        if self.state.incoming:
            files = self.ctx.broadcast(self._main_only(
                "reading the folded-in data", lambda: incoming.read_recorded(self.run.path, self.state.incoming)))
            parts.append(incoming.as_dataset(self.spec, self.splits, self.arch, files))
        self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        lengths = sample_lengths(self.train_set) if self.config.group_by_length else None
        self.planner = BatchPlanner(self.train_set, self.config.batch_size // self.ctx.world_size, self.config.seed,
                               self.ctx.rank, self.ctx.world_size, lengths)

    def _check_same_data(self, payload: dict[str, Any]) -> None:
        """A resumed run must see the data (and tokenizer) it started with, or its position means nothing."""
        saved_version = payload.get("data_version")
        if saved_version and saved_version != self.splits.version:
            raise UserError(f"the {self.config.model} data changed since this run started (data version "
                            f"{saved_version[:12]}… in the checkpoint, {self.splits.version[:12]}… now); resuming "
                            "would not continue the same training: use a new --run-dir")
        saved = payload.get("artifacts") or {}
        for key, value in self.splits.artifacts.items():
            if key in saved and saved[key] != value:
                raise UserError(f"the {key} of this run ({str(value)[:12]}…) differs from the one in the checkpoint "
                                f"({str(saved[key])[:12]}…; changed files or a library version change?); resuming "
                                "would not continue the same training: restore it or use a new --run-dir")

    def steps_for_epochs(self, epochs: int) -> int:
        """Optimizer steps in ``epochs`` epochs of the current training set (a short last group counts as one)."""
        return epochs * -(-self.planner.batches_per_epoch // self.config.accumulate)

    def fold_in(self, entries: list[dict[str, Any]]) -> None:
        """Add accepted data files (see :mod:`training.incoming`) and grant another round of epochs on them."""
        s, rounds = self.state, self.config.sidecar.epochs_per_round
        s.incoming.extend(entries)
        self._rebuild_train_set()
        s.epochs_target = s.epoch + rounds
        s.finished, s.stop_reason, s.bad_epochs = False, None, 0
        self.schedule.start_segment(s.step, self.steps_for_epochs(rounds))
        # No checkpoint here: its name would repeat the epoch-end checkpoint's. Until the next checkpoint records
        # the new data, a restarted sidecar finds it as pending in RUN_DIR/data/ and folds it in the same way.

    # ------------------------------------------------------------------------------------------------ resume
    def _resume(self) -> bool:
        def newest() -> bytes | None:
            self.store.clean_leftovers()
            loaded = self.store.latest()
            if loaded is None:
                return None
            self.last_checkpoint = (loaded.path.name, loaded.sha256)
            _log(self.ctx, f"resuming from {loaded.path} (epoch {loaded.payload['epoch']}, batch "
                           f"{loaded.payload['position']}, step {loaded.payload['step']})")
            return loaded.blob

        blob = self.ctx.broadcast(self._main_only("reading checkpoints", newest))
        if blob is None:
            return False
        payload = decode(blob, self.identity)
        self._check_same_data(payload)
        self.spec.load_checkpoint_state(self.module, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["scheduler"])
        if payload["scaler"] and self.scaler.is_enabled():  # empty when the run so far had no fp16 (e.g. CPU)
            self.scaler.load_state_dict(payload["scaler"])
        per_rank = payload["rng"]
        if len(per_rank) == self.ctx.world_size:
            rng.restore(per_rank[self.ctx.rank])
        else:
            _log(self.ctx, f"note: the checkpoint was written by {len(per_rank)} process(es), this run has "
                           f"{self.ctx.world_size}; generators are re-seeded (training continues, not bit-exact)")
            rng.seed_everything(rng.derive_seed(self.config.seed, "resume", self.ctx.rank, payload["step"]) % 2**31)
        s = self.state
        s.epoch, s.position, s.step = payload["epoch"], payload["position"], payload["step"]
        s.samples_seen = payload.get("samples_seen", 0)
        s.history, s.best = list(payload["history"]), payload["best"]
        s.bad_epochs = payload.get("bad_epochs", 0)
        s.finished, s.stop_reason = payload.get("finished", False), payload.get("stop_reason")
        s.epochs_target = max(self.config.epochs, payload.get("epochs_target", 0)) if self.config.sidecar.enabled \
            else self.config.epochs
        s.incoming = list(payload.get("incoming", []))
        partial = payload.get("partial") or []
        self.partial = partial[self.ctx.rank] if len(partial) == self.ctx.world_size else {"loss_sum": 0.0, "samples": 0}
        if s.finished and s.stop_reason == "epochs" and s.epoch < s.epochs_target:
            s.finished, s.stop_reason = False, None  # the epoch budget was raised: keep going
        if self.metrics:
            self.metrics.step.set(s.step)
            self.metrics.epoch.set(s.epoch)
            if s.history:
                self._publish_epoch_metrics(s.history[-1])
        return True

    # ------------------------------------------------------------------------------------------------ training
    def train(self) -> RoundResult:
        """Train until ``state.epochs_target`` epochs, early stopping, or a stop signal."""
        s, config = self.state, self.config
        if self.metrics:
            self.metrics.running.set(1)
        self._export_best_if_stale()
        while not s.finished and s.epoch < s.epochs_target:
            if self._train_epoch():
                return RoundResult("signal", f"stopped by {self.stop.requested} at step {s.step} (epoch {s.epoch + 1}, "
                                             f"batch {s.position}); re-run the same command to resume")
        if self.metrics:
            self.metrics.running.set(0)
        if s.stop_reason == "early_stopping":
            return RoundResult("early_stopping", f"early stopping after epoch {s.epoch}: no {config.early_stopping.monitor} "
                                                 f"improvement for {config.early_stopping.patience} epochs")
        if s.epoch >= s.epochs_target and not s.finished:
            s.finished, s.stop_reason = True, "epochs"
        return RoundResult("epochs", f"trained {s.epoch} of {s.epochs_target} epochs")

    def _train_epoch(self) -> bool:
        """One epoch from the saved position; returns True when a stop signal ended it early."""
        s, config, ctx = self.state, self.config, self.ctx
        plan = self.planner.plan(s.epoch)
        total = len(plan)
        self.model.train()
        progress = EpochProgress(s.epoch + 1, s.epochs_target, total, s.position, ctx.is_main, config.progress.bar,
                                 config.progress.log_every_seconds)
        epoch_started = time.monotonic()
        window = {"loss": 0.0, "batches": 0, "samples": 0, "t": time.monotonic()}
        try:
            while s.position < total:
                group = plan.batches[s.position:min(s.position + config.accumulate, total)]
                lr, loss_sum, samples = self._optimizer_step(group)
                s.position += len(group)
                s.step += 1
                s.samples_seen += samples * ctx.world_size
                window["loss"] += loss_sum
                window["samples"] += samples
                window["batches"] += len(group)
                now = time.monotonic()
                rate = window["samples"] * ctx.world_size / max(1e-9, now - window["t"])
                mean_loss = window["loss"] / max(1, window["samples"])
                progress.update(len(group), mean_loss, lr, rate)
                if self.metrics and now - window["t"] >= 1.0:
                    self.metrics.loss.set(mean_loss)
                    self.metrics.samples_per_second.set(rate)
                    self.metrics.learning_rate.set(lr)
                    self.metrics.step.set(s.step)
                    window = {"loss": 0.0, "batches": 0, "samples": 0, "t": now}
                due_by_time = bool(config.checkpoint.every_minutes) and \
                    time.monotonic() - self.last_checkpoint_time >= 60 * config.checkpoint.every_minutes
                due_by_steps = bool(config.checkpoint.every_steps) and s.step % config.checkpoint.every_steps == 0
                stop_now, due = self._agree(self.stop.requested is not None, due_by_time or due_by_steps)
                if stop_now or (due and s.position < total):
                    self._checkpoint()
                if stop_now:
                    return True
                if _KILL_AFTER_STEP is not None and s.step == _KILL_AFTER_STEP:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the kill -9 tests (see below)
        finally:
            progress.close()
        self._end_epoch(time.monotonic() - epoch_started)
        return False

    def _agree(self, stop: bool, due: bool) -> tuple[bool, bool]:
        """All ranks take rank 0's view of the clock-based decisions (signals reach every rank under torchrun)."""
        if not self.ctx.distributed:
            return stop, due
        flags = torch.tensor([float(stop), float(due)], device=self.ctx.device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())

    def _optimizer_step(self, group: list[list[int]]) -> tuple[float, float, int]:
        """Forward/backward over the micro-batches of one accumulation group, then clip and step."""
        s, ctx = self.state, self.ctx
        lr = self.schedule.apply(s.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, samples, nonfinite_loss = 0.0, 0, None
        for j, indices in enumerate(group):
            inputs, targets = collate_indices(self.train_set, indices, self.spec.collate)
            inputs = tuple(t.to(ctx.device, non_blocking=True) for t in inputs)
            targets = targets.to(ctx.device, non_blocking=True)
            last = j == len(group) - 1
            sync = contextlib.nullcontext() if (last or not ctx.distributed) else self.model.no_sync()
            with sync:
                with self._autocast():
                    logits = self.model(*inputs)[0]
                loss = F.cross_entropy(logits.float(), targets)
                value = float(loss.detach())
                if not torch.isfinite(loss).item() and nonfinite_loss is None:
                    nonfinite_loss = value
                self.scaler.scale(loss / len(group)).backward()
            loss_sum += value * len(indices)
            samples += len(indices)
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.module.parameters() if p.grad is not None]
        if self.config.grad_clip:
            norm = nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        bad_grads = not torch.isfinite(norm).item() and not self.scaler.is_enabled()  # fp16 overflow: scaler skips
        if self.ctx.any_true(nonfinite_loss is not None or bad_grads):
            what = f"the loss is {nonfinite_loss}" if nonfinite_loss is not None else "the gradient norm is not finite"
            last = f"the last good checkpoint is {self.run.checkpoints / self.last_checkpoint[0]}" if \
                self.last_checkpoint else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"training diverged at optimizer step {s.step + 1} (epoch {s.epoch + 1}, batch {s.position + 1}): "
                f"{what}; stopped without writing anything for this step ({last}). Lower --lr, set --grad-clip, or "
                "check the data")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.partial["loss_sum"] += loss_sum
        self.partial["samples"] += samples
        return lr, loss_sum, samples

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------------------------------------ epoch end
    @torch.no_grad()
    def evaluate(self, dataset: Dataset, lengths: list[int] | None, everyone: bool = True) -> dict[str, float]:
        """Mean loss and accuracy over ``dataset``; sharded over ranks when ``everyone``, else this rank alone."""
        rank, world = (self.ctx.rank, self.ctx.world_size) if everyone else (0, 1)
        self.module.eval()
        loss_sum = correct = count = 0.0
        for indices in eval_batches(len(dataset), self.config.eval_batch_size, rank, world, lengths):
            inputs, targets = collate_indices(dataset, indices, self.spec.collate)
            inputs = tuple(t.to(self.ctx.device) for t in inputs)
            targets = targets.to(self.ctx.device)
            with self._autocast():
                logits = self.module(*inputs)[0]
            loss_sum += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            correct += float((logits.argmax(dim=-1) == targets).sum())
            count += len(indices)
        if everyone:
            loss_sum, correct, count = self.ctx.sum([loss_sum, correct, count])
        self.model.train()
        return {"loss": loss_sum / max(1.0, count), "accuracy": correct / max(1.0, count), "samples": count}

    def _end_epoch(self, seconds: float) -> None:
        s, config, ctx = self.state, self.config, self.ctx
        val = self.evaluate(self.splits.val, self.val_lengths)
        loss_sum, samples = ctx.sum([self.partial["loss_sum"], float(self.partial["samples"])])
        self.partial = {"loss_sum": 0.0, "samples": 0}
        record = {
            "epoch": s.epoch + 1, "step": s.step, "train_loss": loss_sum / max(1.0, samples),
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(seconds, 3), "samples_per_second": round(samples / max(1e-9, seconds), 1),
        }
        s.history.append(record)
        es = config.early_stopping
        value = record[es.monitor]
        higher = es.monitor == "val_accuracy"
        best_value = s.best["value"] if s.best else None
        improved = best_value is None or (value > best_value + es.min_delta if higher else value < best_value - es.min_delta)
        self.schedule.epoch_end(value, higher)
        s.epoch += 1
        s.position = 0
        name = checkpoint_name(s.epoch, s.position, s.step)
        if improved:
            s.best = {"epoch": s.epoch, "step": s.step, "monitor": es.monitor, "value": value, "checkpoint": name,
                      "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            s.bad_epochs = 0
        else:
            s.bad_epochs += 1
            if es.patience and s.bad_epochs >= es.patience:
                s.finished, s.stop_reason = True, "early_stopping"
        if s.epoch >= s.epochs_target and not s.finished:
            s.finished, s.stop_reason = True, "epochs"
        mark = " *best*" if improved else ""
        _log(ctx, f"epoch {s.epoch}/{s.epochs_target}: train loss {record['train_loss']:.4f}, val loss "
                  f"{val['loss']:.4f}, val accuracy {100 * val['accuracy']:.2f}%{mark} "
                  f"({seconds:.1f} s, {record['samples_per_second']:,.0f} samples/s)")
        self._checkpoint()
        if improved:
            self._main_only("exporting the new best weights", lambda: self._export(self.module, best_only=True))
        self._main_only("writing the metrics log", self._write_metrics_log)
        self._publish_epoch_metrics(record)

    def _publish_epoch_metrics(self, record: dict[str, Any]) -> None:
        if not self.metrics:
            return
        self.metrics.epoch.set(record["epoch"])
        self.metrics.val_loss.set(record["val_loss"])
        self.metrics.accuracy.set(record["val_accuracy"])
        self.metrics.step.set(self.state.step)
        if self.state.best and self.state.best.get("val_accuracy") is not None:
            self.metrics.best_accuracy.set(self.state.best["val_accuracy"])

    def _write_metrics_log(self) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.state.history)
        atomic_write_text(self.run.path / METRICS_LOG, text)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> None:
        """Gather every rank's generator state, then rank 0 writes, prunes and reports; all ranks agree on failure."""
        s, ctx = self.state, self.ctx
        mine = {"rng": rng.capture(), "partial": dict(self.partial)}
        gathered = ctx.gather_to_main(mine)

        def write() -> None:
            name = checkpoint_name(s.epoch, s.position, s.step)
            payload = {
                "format": 1, "identity": self.identity, "model_name": self.config.model,
                "epoch": s.epoch, "position": s.position, "step": s.step, "samples_seen": s.samples_seen,
                "model": {k: v.detach().to("cpu").clone()
                          for k, v in self.spec.checkpoint_state(self.module).items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": [g["rng"] for g in gathered], "partial": [g["partial"] for g in gathered],
                "history": s.history, "best": s.best, "bad_epochs": s.bad_epochs, "finished": s.finished,
                "stop_reason": s.stop_reason, "epochs_target": s.epochs_target, "incoming": s.incoming,
                "config": self.config.model_dump(mode="json"), "world_size": ctx.world_size,
                "data_version": self.splits.version, "artifacts": dict(self.splits.artifacts),
                "writer": {"rank": ctx.rank, "pid": os.getpid(), "host": socket.gethostname()},
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            try:
                path, digest = self.store.save(payload, name)
            except ValueError as exc:  # non-finite weights
                raise TrainingDiverged(f"{exc}; stopped at step {s.step}") from None
            self.last_checkpoint = (name, digest)
            protect = {s.best["checkpoint"]} if s.best else set()
            self.store.prune(self.config.checkpoint.keep_last, protect)
            if self.metrics:
                self.metrics.checkpoint_written()

        self._main_only("writing a checkpoint", write)
        self.last_checkpoint_time = time.monotonic()

    # ------------------------------------------------------------------------------------------------ export
    def _parent_ref(self, name: str) -> CheckpointRef | None:
        path = self.run.checkpoints / name
        sha_file = path.with_name(name + ".sha256")
        if not sha_file.is_file():
            return None
        epoch, _position, step = parse_name(name)
        return CheckpointRef(path=f"checkpoints/{name}", sha256=sha_file.read_text().split()[0], epoch=epoch,
                             step=step)

    def _training_info(self) -> dict[str, Any]:
        s = self.state
        return {"seed": self.config.seed, "epochs": s.epoch, "epochs_target": s.epochs_target, "steps": s.step,
                "samples_seen": s.samples_seen, "stop_reason": s.stop_reason, "run_identity": self.identity,
                "world_size": self.ctx.world_size, "incoming_data": [i["file"] for i in s.incoming],
                "config": self.config.model_dump(mode="json")}

    def _export(self, module: nn.Module, best_only: bool, extra_metrics: dict[str, float] | None = None,
                parent_name: str | None = None):
        s = self.state
        parent_name = parent_name or (s.best["checkpoint"] if best_only and s.best else
                                      (self.last_checkpoint[0] if self.last_checkpoint else None))
        source = s.best if best_only and s.best else (s.history[-1] if s.history else {})
        metrics = {"val_accuracy": source.get("val_accuracy", float("nan")), "val_loss": source.get("val_loss", float("nan")),
                   "epoch": float(source.get("epoch", s.epoch)), "step": float(source.get("step", s.step))}
        metrics.update(extra_metrics or {})
        return export_weights(self.run.path, self.spec, self.arch, self.data_cfg, module, self.splits, metrics,
                              self._training_info(), self._parent_ref(parent_name) if parent_name else None)

    def _export_best_if_stale(self) -> None:
        """After a crash between a best checkpoint and its export, redo the export before training on."""
        s = self.state
        if not (self.ctx.is_main and s.best and not s.finished):
            return
        ref = self._parent_ref(s.best["checkpoint"])
        try:
            current = read_manifest(self.run.path, verify=True).parent_checkpoint
        except UserError:
            current = None
        if ref is None or (current is not None and current.sha256 == ref.sha256):
            return
        try:
            best = self.store.read(self.run.checkpoints / s.best["checkpoint"])
        except CheckpointInvalid as reason:
            _log(self.ctx, f"warning: best checkpoint {s.best['checkpoint']} is unusable ({reason}); not re-exported")
            return
        module = self._module_from(best.payload["model"])
        self._export(module, best_only=True)
        _log(self.ctx, f"re-exported the best weights of {s.best['checkpoint']} (the previous export was interrupted)")

    def _module_from(self, state: dict[str, Any]) -> nn.Module:
        """A fresh module holding checkpointed weights; building it draws no numbers from the run's generators
        (random initialisation would otherwise shift every later dropout mask of a resumed run)."""
        saved = rng.capture()
        try:
            module = self.spec.build(self.arch)
        finally:
            rng.restore(saved)
        self.spec.load_checkpoint_state(module, state)
        return module

    def finish(self) -> dict[str, Any]:
        """Final export (best or last weights, with test-split metrics), metrics log and curves; rank 0 only."""
        return self._main_only("writing the final export", self._finish)

    def _finish(self) -> dict[str, Any]:
        s, config = self.state, self.config
        module, parent, source = self.module, self.last_checkpoint[0] if self.last_checkpoint else None, "last"
        if config.checkpoint.export == "best" and s.best:
            try:
                best = self.store.read(self.run.checkpoints / s.best["checkpoint"])
                module = self._module_from(best.payload["model"]).to(self.ctx.device)
                parent, source = s.best["checkpoint"], "best"
            except CheckpointInvalid as reason:
                _log(self.ctx, f"warning: best checkpoint {s.best['checkpoint']} is unusable ({reason}); exporting "
                               "the last weights instead")
        saved_module, self.module = self.module, module
        try:
            test = self.evaluate(self.splits.test, sample_lengths(self.splits.test), everyone=False)
        finally:
            self.module = saved_module
        manifest = self._export(module, best_only=source == "best", parent_name=parent,
                                extra_metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"]})
        self._write_metrics_log()
        plot_history(s.history, self.run.path / CURVES_PNG,
                     f"{config.model}: seed {config.seed}, {s.epoch} epochs, test accuracy {100 * test['accuracy']:.2f}%")
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "weights": source,
                "parent": parent, "manifest": str(self.run.path / MANIFEST_NAME),
                "safetensors": str(self.run.path / manifest.weights.file)}

    def close(self) -> None:
        if self.metrics:
            self.metrics.close()
        self.run.release()

