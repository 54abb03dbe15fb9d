"""Sidecar mode: the trainer as a long-running service next to Triton (``python -m training --sidecar ...``).

It trains like a normal run (resuming from the run directory), checkpoints every N steps or M minutes (5 minutes when
neither is configured), exports ``model.safetensors`` + ``manifest.json`` on every new best so the builders' watch
mode can publish it, and serves its state as Prometheus metrics. When the epoch budget is spent (or early stopping
fires) it writes the final export and stays up:

* with ``--watch-dir``, it polls the directory for new labelled ``*.jsonl`` files (:mod:`training.incoming`); each
  accepted file is folded into the training set and another ``epochs_per_round`` epochs are trained, with a fresh
  warm-up and decay segment of the learning-rate schedule;
* without it, it idles, keeping the metrics endpoint up (``training_running`` is 0).

SIGTERM (``docker stop``) or Ctrl-C finishes the current optimizer step, writes a checkpoint and exits 0; the next
start resumes there. Under torchrun every decision is rank 0's, broadcast to the others.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from common.files import sha256_file

from training import incoming
from training.config import RunConfig
from training.trainer import StopFlag, Trainer


def with_checkpoint_period(config: RunConfig) -> RunConfig:
    """Guarantee periodic checkpoints: a service must never lose more than a few minutes of work."""
    c = config.checkpoint
    if c.every_steps or c.every_minutes:
        return config
    period = c.model_copy(update={"every_minutes": config.sidecar.default_checkpoint_minutes})
    return config.model_copy(update={"checkpoint": period})


def _say(trainer: Trainer, message: str) -> None:
    if trainer.ctx.is_main:
        print(message, file=sys.stderr, flush=True)


def serve(trainer: Trainer, stop: StopFlag) -> int:
    """Train, export, wait for data, repeat; returns the exit status after a stop signal."""
    config = trainer.config.sidecar
    rejected: set[str] = set()
    trainer.setup()
    while True:
        result = trainer.train()
        if result.reason == "signal":
            _say(trainer, result.message)
            return 0
        summary = trainer.finish()
        _say(trainer, f"{result.message}; exported {summary['weights']} weights (test accuracy "
                      f"{100 * summary['test_accuracy']:.2f}%) to {summary['safetensors']}")
        if config.watch_dir:
            _say(trainer, f"idle: watching {config.watch_dir} for new *.jsonl training data every "
                          f"{config.poll_seconds:g} s (SIGTERM to stop)")
        else:
            _say(trainer, "idle: training is complete; serving metrics until SIGTERM")
        entries = _wait_for_data(trainer, stop, rejected)
        if entries is None:
            _say(trainer, f"stopped by {stop.requested} while idle; the run is complete and exported")
            return 0
        trainer.fold_in(entries)
        _say(trainer, f"folded in {sum(e['records'] for e in entries)} new records from "
                      f"{', '.join(e['source'] for e in entries)}; training {config.epochs_per_round} more epochs")


def _wait_for_data(trainer: Trainer, stop: StopFlag, rejected: set[str]) -> list[dict] | None:
    """Poll until new data is accepted (its entries) or a stop signal arrives (``None``)."""
    config = trainer.config.sidecar
    while True:
        deadline = time.monotonic() + config.poll_seconds
        while time.monotonic() < deadline and stop.requested is None:
            time.sleep(min(0.5, config.poll_seconds))
        decision = trainer.ctx.broadcast(_look(trainer, stop, rejected) if trainer.ctx.is_main else None)
        if decision == "stop":
            return None
        if decision:
            return decision


def _look(trainer: Trainer, stop: StopFlag, rejected: set[str]) -> str | list[dict] | None:
    """Rank 0: "stop", the entries of newly accepted data (pending copies first), or ``None``."""
    if stop.requested:
        return "stop"
    run_dir = trainer.run.path
    accepted = incoming.pending(run_dir, trainer.state.incoming)
    watch = trainer.config.sidecar.watch_dir
    if watch is not None:
        seen = rejected | incoming.recorded_keys(trainer.state.incoming) | incoming.recorded_keys(accepted)
        for path in incoming.candidates(Path(watch), seen):
            taken = len(trainer.state.incoming) + len(accepted)
            try:
                entry, _records = incoming.accept(trainer.spec, trainer.splits, trainer.arch, path, run_dir, taken)
            except (ValueError, UnicodeDecodeError, OSError) as exc:
                reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                print(f"warning: rejected new data {reason} (fix it and drop it again)", file=sys.stderr, flush=True)
                with contextlib.suppress(OSError):
                    rejected.add(incoming.source_key(path.name, sha256_file(path)))
                continue
            accepted.append(entry)
    return accepted or None
