"""Training throughput (samples/s) of every registered model, measured with the real trainer.

Each measurement is a short run of :class:`training.trainer.Trainer` (the code ``python -m training`` runs: AdamW,
clipping, the schedule, length-grouped batches) in a throw-away run directory. The figure is the samples per second of
the last epoch's training steps (evaluation and checkpointing excluded), so the first epoch absorbs warm-up effects.

On a CUDA machine every model is measured three times, in float32, bf16 autocast and fp16 autocast with a GradScaler,
to show what automatic mixed precision buys; on a CPU machine AMP does not apply and the results say so.

Results: ``benchmarks/results/training_throughput.json`` (+ ``.png``), with the machine they were measured on.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cli
from common.files import atomic_write_json
from common.plots import save_png

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Small data slices: the network is always the registered default size (textclf: the benchmark size).
DEFAULT_DATA = {"textclf": {"train_size": 1536, "val_size": 128, "test_size": 128}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training import models

    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help=f"models to measure (default all: {', '.join(from_scratch(models.names()))}, then LoRA "
                             "against full fine-tuning of MiniLM, which --models hf_classifier selects alone)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement; the last one is reported (default 2)")
    parser.add_argument("--max-samples", type=int, default=1280,
                        help="training samples per epoch for each model (default 1280)")
    parser.add_argument("--batch-size", type=int, default=64, help="micro-batch size (default 64, as in training)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's choice)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to measure (default auto: CUDA if present, else CPU)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where results go (default benchmarks/results)")
    parser.add_argument("--name", default="training_throughput", help="results file name without extension")


def from_scratch(names: list[str]) -> list[str]:
    """Models trained from random weights; ``hf_classifier`` needs a base model and is measured by
    :mod:`benchmarks.finetune_throughput` (LoRA against full fine-tuning) instead."""
    return [n for n in names if n != "hf_classifier"]


def precisions(device: str) -> list[str]:
    """The --amp settings to compare: off/bf16/fp16 on CUDA, float32 only on CPU."""
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        modes = ["off", "fp16"]
        if torch.cuda.is_bf16_supported():
            modes.insert(1, "bf16")
        return modes
    return ["off"]


def measure(model: str, amp: str, args: argparse.Namespace) -> dict[str, Any]:
    """One short training run; samples/s of its last epoch."""
    from training.config import resolve
    from training.distributed import setup, teardown
    from training.trainer import Trainer

    overrides: dict[str, Any] = {
        "model": model, "epochs": args.epochs, "batch_size": args.batch_size, "max_train_samples": args.max_samples,
        "amp": amp, "device": args.device, "threads": args.threads, "early_stopping.patience": 0,
        "progress.bar": "off", "progress.log_every_seconds": 3600.0,
    }
    for key, value in DEFAULT_DATA.get(model, {}).items():
        overrides[f"data.{key}"] = value
    config = resolve(None, overrides)
    ctx = setup(config.device)
    with tempfile.TemporaryDirectory(prefix=f"throughput-{model}-") as tmp:
        trainer = Trainer(config, Path(tmp) / "run", ctx)
        try:
            trainer.setup()
            started = time.monotonic()
            trainer.train()
            wall = time.monotonic() - started
            last = trainer.state.history[-1]
            precision = {None: "float32"}.get(trainer.autocast_dtype, str(trainer.autocast_dtype).replace("torch.", ""))
            return {
                "model": model, "device": str(ctx.device), "amp": amp, "precision": precision,
                "batch_size": args.batch_size, "samples_per_epoch": trainer.planner.sampler.num_samples,
                "samples_per_second": last["samples_per_second"], "last_epoch_seconds": last["epoch_seconds"],
                "wall_seconds_with_eval": round(wall, 2),
                "parameters": sum(p.numel() for p in trainer.module.parameters()),
            }
        finally:
            trainer.close()
            teardown(ctx)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r['precision']}" for r in rows]
    values = [r["samples_per_second"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 4), constrained_layout=True)
    bars = ax.bar(labels, values, color=["tab:blue" if r["precision"] == "float32" else "tab:green" for r in rows])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set(ylabel="samples / s (training)", title=title)
    ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)


def run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.machine import machine_facts
    from common.errors import UserError
    from training import models

    names = args.models or models.names()
    finetune = "hf_classifier" in names
    names = from_scratch(names)
    unknown = sorted(set(names) - set(models.names()))
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; expected some of: {', '.join(models.names())}")
    if args.epochs < 1 or args.max_samples < args.batch_size or args.batch_size < 1:
        raise UserError("expected --epochs >= 1 and --max-samples >= --batch-size >= 1")
    modes = precisions(args.device)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    rows = []
    for name in names:
        for amp in modes:
            print(f"measuring {name} ({'float32' if amp == 'off' else amp}) ...", file=sys.stderr, flush=True)
            row = measure(name, amp, args)
            rows.append(row)
            print(f"  {name:8s} {row['precision']:8s} {row['device']:6s} {row['samples_per_second']:>10,.1f} samples/s "
                  f"(batch {row['batch_size']}, {row['samples_per_epoch']} samples/epoch)", flush=True)
    finetune_rows = []
    if finetune:
        from benchmarks.finetune_throughput import compare

        finetune_rows = compare(threads=args.threads, device=args.device)
    amp_note = ("AMP compared on CUDA: float32 vs " + ", ".join(m for m in modes if m != "off")) if cuda else \
        "no CUDA device here: AMP (bf16/fp16) applies to CUDA only, so only float32 was measured"
    print(amp_note, flush=True)
    results_dir = Path(args.results_dir)
    document = {"benchmark": "training_throughput", "machine": machine_facts(), "threads": torch.get_num_threads(),
                "amp": amp_note, "results": rows, "finetune": finetune_rows}
    atomic_write_json(results_dir / f"{args.name}.json", document)
    if rows:
        plot(rows, results_dir / f"{args.name}.png", "training throughput (" + ("CUDA" if cuda else "CPU") + ")")
    print(f"wrote {results_dir / (args.name + '.json')}" + (f" and {results_dir / (args.name + '.png')}" if rows else ""),
          flush=True)
    return 0


if __name__ == "__main__":
    from common.errors import run_cli

    def _main(argv=None):
        parser = cli.command_parser("python -m benchmarks.training_throughput", __doc__)
        add_arguments(parser)
        return run(parser.parse_args(argv))

    run_cli(_main)
