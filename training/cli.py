"""``python -m training``: train a registered model into a run directory; re-running the same command resumes.

Flags override the ``--config`` TOML/YAML file, which overrides the defaults of :class:`training.config.RunConfig`;
the whole configuration is validated before any work starts.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from common import cli
from common.errors import UserError

PROG = "python -m training"
DESCRIPTION = ("Train a registered model into a run directory: resumable, seeded, DDP-ready, observable. The "
               "result (model.safetensors + manifest.json) is what `python -m builders` consumes.")

EPILOG = """\
resume:
  Re-running the same command with the same --run-dir continues from the newest good checkpoint (also after kill -9;
  on CPU the final weights are bit-identical to an uninterrupted run). A damaged checkpoint is reported and skipped.
  A run directory of another model or with other settings is refused. Raising --epochs extends a finished run.

outputs in RUN_DIR:
  run.json                  the run's identity (model + settings that decide the weights)
  checkpoints/ckpt-*.pt     resumable checkpoints (+ .sha256); the last --keep-last and the best are kept
  model.safetensors         exported weights (every new best during the run; best or last at the end)
  manifest.json             what the builders read: model, arch, labels, metrics, data/code version, parent checkpoint
  tokenizer.json            text models only: the tokenizer the server must use
  metrics.jsonl             one JSON line per epoch; training_curves.png: loss, accuracy, lr per epoch

fine-tuning a pretrained Hugging Face encoder (model hf_classifier; read from disk only):
  python -m training --from-pretrained DIR --task classification --data train.jsonl [--val-data val.jsonl] \\
      [--lora --lora-rank 8 --lora-alpha 16 --lora-dropout 0.1 --lora-targets query,value] --run-dir runs/x
  RUN_DIR/hf/ is the merged model (save_pretrained, adapters merged in: what the builders publish), RUN_DIR/adapter/
  the LoRA adapter alone; manifest.json records merge parity and the adapter's size. LoRA checkpoints hold only the
  adapters and the head. Models defined elsewhere: --spec FILE.py:CLASS or the entry-point group
  inference_platform.models.

distributed (PyTorch DDP; gloo on CPU, NCCL on GPU; --batch-size is the global batch):
  torchrun --nproc_per_node=2 -m training --model digits --run-dir runs/digits --seed 0 --epochs 10
  multi-node: the same command on every node, plus
    --nnodes=2 --node_rank=<0|1> --rdzv_backend=c10d --rdzv_endpoint=<host-of-node-0>:29500 --rdzv_id=<job-id>
  Only rank 0 writes the run directory (it needs no shared filesystem).

sidecar (long-running, for docker compose):
  python -m training --sidecar --model textclf --run-dir /runs/textclf --metrics-port 9402 --watch-dir /incoming
  Checkpoints every --checkpoint-every-steps/--checkpoint-every-minutes (default 5 minutes), exports each new best,
  then folds in new *.jsonl data from --watch-dir. SIGTERM stops it cleanly after the current step.

exit status: 0 done (or stopped by SIGTERM in sidecar mode), 2 bad input or training diverged, 130/143 a plain run
stopped by SIGINT/SIGTERM (after writing a checkpoint; re-run to resume).
"""


def _override_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one command, no subcommands (``torchrun ... -m training`` passes the same flags)."""
    return cli.command_parser(PROG, DESCRIPTION, add_arguments, EPILOG)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training import models

    run = parser.add_argument_group("run")
    run.add_argument("--model", help=f"registered model to train: {', '.join(models.names())} (or set `model` in --config)")
    run.add_argument("--spec", metavar="FILE.py:CLASS",
                     help="train a model spec defined outside the package (a training.models.ModelSpec subclass); "
                          "--model defaults to its name. Installed plug-ins register through the entry-point group "
                          f"{models.ENTRY_POINT_GROUP} instead")
    run.add_argument("--run-dir", required=True, help="directory of this run: created if new, resumed if it holds the "
                                                      "same run, refused if it holds another one")
    run.add_argument("--config", help="TOML/YAML/JSON file with RunConfig fields (e.g. training/configs/digits.toml); "
                                      "flags override it")
    run.add_argument("--seed", type=int, help="seed for initialisation, data order and dropout (default 0)")
    run.add_argument("--epochs", type=int, help="total epochs of the run (default 10); resuming continues up to it")
    run.add_argument("--max-train-samples", type=int, help="train on only the first N training samples (quick runs)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any configuration field by dotted name, value as JSON or text, repeatable: "
                          "--set data.train_size=4000 --set arch.layers=1 --set schedule.kind=plateau")

    ft = parser.add_argument_group("fine-tuning a pretrained encoder (model hf_classifier)")
    ft.add_argument("--from-pretrained", metavar="DIR",
                    help="Hugging Face model directory (config.json, model.safetensors, tokenizer.json) to fine-tune; "
                         "loaded from disk only")
    ft.add_argument("--task", choices=["classification"], help="what to fine-tune for (default classification: a "
                                                               "linear head on the pooled encoder output)")
    ft.add_argument("--data", metavar="TRAIN.jsonl", help='labelled training records, {"text": ..., "label": ...} per line')
    ft.add_argument("--val-data", metavar="VAL.jsonl",
                    help="validation records (default: --val-fraction of each class held out of --data, by hash)")
    ft.add_argument("--test-data", metavar="TEST.jsonl", help="records for the final test metrics (default: validation)")
    ft.add_argument("--val-fraction", type=float, help="share of --data held out for validation (default 0.1)")
    ft.add_argument("--labels", help="comma-separated class names in output order (default: sorted training labels)")
    ft.add_argument("--max-length", type=int, help="tokens per text, longer ones are truncated (default 128)")
    ft.add_argument("--name", help="model name in the manifest (default: from the directory name)")
    ft.add_argument("--lora", action="store_true", default=None,
                    help="train LoRA adapters (peft) and the head only, instead of every weight")
    ft.add_argument("--lora-rank", type=int, help="LoRA rank r (default 8)")
    ft.add_argument("--lora-alpha", type=float, help="LoRA scaling alpha (default 16)")
    ft.add_argument("--lora-dropout", type=float, help="dropout on the LoRA input (default 0.1)")
    ft.add_argument("--lora-targets", help="comma-separated module names that get adapters (default query,value)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, help="global micro-batch size over all processes (default 64)")
    opt.add_argument("--eval-batch-size", type=int, help="batch size for validation/test passes (default 256)")
    opt.add_argument("--accumulate", type=int, help="micro-batches per optimizer step (gradient accumulation, default 1)")
    opt.add_argument("--lr", type=float, help="peak AdamW learning rate (default 3e-3), must be > 0")
    opt.add_argument("--weight-decay", type=float, help="AdamW weight decay on matrices/embeddings (default 0.01)")
    opt.add_argument("--schedule", choices=["cosine", "linear", "constant", "plateau"],
                     help="learning-rate schedule after warm-up (default cosine)")
    opt.add_argument("--warmup-steps", type=int, help="warm-up optimizer steps (default: 5%% of all steps)")
    opt.add_argument("--grad-clip", type=float, help="max gradient norm (default 1.0); 0 disables clipping")
    opt.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"],
                     help="mixed precision on CUDA (auto = bf16 where supported, else fp16 with a GradScaler); "
                          "always off on CPU")
    opt.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement (default 5, 0 = off)")
    opt.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default auto: CUDA if present)")
    opt.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's choice)")

    ck = parser.add_argument_group("checkpoints and export")
    ck.add_argument("--keep-last", type=int, help="checkpoints kept besides the best (default 3)")
    ck.add_argument("--checkpoint-every-steps", type=int, help="also checkpoint every N optimizer steps (default: per epoch)")
    ck.add_argument("--checkpoint-every-minutes", type=float, help="also checkpoint every M minutes")
    ck.add_argument("--export", choices=["best", "last"], help="weights exported at the end (default best validation)")

    obs = parser.add_argument_group("observability")
    obs.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (default 0 = off)")
    obs.add_argument("--metrics-host", help="address the metrics server binds (default 127.0.0.1)")
    obs.add_argument("--progress", choices=["auto", "on", "off"],
                     help="tqdm progress bar: auto = on a terminal, periodic lines otherwise (default auto)")

    side = parser.add_argument_group("sidecar mode")
    side.add_argument("--sidecar", action="store_true", default=None,
                      help="long-running service: periodic checkpoints, export on each best, then wait for new data")
    side.add_argument("--watch-dir", help="sidecar: directory polled for new labelled *.jsonl files")
    side.add_argument("--poll-seconds", type=float, help="sidecar: polling period of --watch-dir (default 30)")
    side.add_argument("--epochs-per-round", type=int, help="sidecar: epochs trained on each arrival of new data (default 2)")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Flags as dotted RunConfig keys (``None`` = not given, so the file or the default stays)."""
    values = {
        "model": args.model, "spec": args.spec, "seed": args.seed, "epochs": args.epochs, "max_train_samples": args.max_train_samples,
        "batch_size": args.batch_size, "grad_clip": args.grad_clip, "eval_batch_size": args.eval_batch_size,
        "accumulate": args.accumulate,
        "optimizer.lr": args.lr, "optimizer.weight_decay": args.weight_decay, "schedule.kind": args.schedule,
        "schedule.warmup_steps": args.warmup_steps, "amp": args.amp, "device": args.device, "threads": args.threads,
        "early_stopping.patience": args.patience, "checkpoint.keep_last": args.keep_last,
        "checkpoint.every_steps": args.checkpoint_every_steps,
        "checkpoint.every_minutes": args.checkpoint_every_minutes, "checkpoint.export": args.export,
        "metrics.port": args.metrics_port, "metrics.host": args.metrics_host, "progress.bar": args.progress,
        "sidecar.enabled": args.sidecar, "sidecar.watch_dir": args.watch_dir,
        "sidecar.poll_seconds": args.poll_seconds, "sidecar.epochs_per_round": args.epochs_per_round,
    }
    values.update(finetune_overrides(args))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set data.train_size=4000")
        values[key.strip()] = _override_value(value)
    return values


FINETUNE_LR = {"full": 5e-5, "lora": 1e-3}  # the from-scratch default (3e-3) would wreck pretrained weights


def _absolute(path: str | None) -> str | None:
    from pathlib import Path

    return str(Path(path).expanduser().resolve()) if path else None


def finetune_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fine-tuning flags as hf_classifier configuration (paths made absolute: the run's identity records them)."""
    lora_flags = {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                  "target_modules": [t.strip() for t in args.lora_targets.split(",") if t.strip()]
                  if args.lora_targets is not None else None}
    given = [f"--lora-{'targets' if k == 'target_modules' else k}" for k, v in lora_flags.items() if v is not None]
    tuning = [args.task, args.data, args.val_data, args.test_data, args.val_fraction, args.labels, args.max_length,
              args.name, args.lora]
    if args.from_pretrained is None:
        if any(v is not None for v in tuning) or given:
            raise UserError("--task, --data, --lora and the other fine-tuning flags need --from-pretrained DIR")
        return {}
    if args.model not in (None, "hf_classifier"):
        raise UserError(f"--from-pretrained fine-tunes model hf_classifier; drop --model {args.model}")
    from training.models.hf_classifier import check_model_dir

    try:
        check_model_dir(args.from_pretrained)
    except ValueError as exc:
        raise UserError(f"--from-pretrained: {exc}") from None
    if args.data is None and not args.config:
        raise UserError("--from-pretrained needs --data TRAIN.jsonl (labelled {\"text\": ..., \"label\": ...} lines)")
    if given and not args.lora:
        raise UserError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} LoRA options: add --lora")
    values: dict[str, Any] = {
        "model": "hf_classifier", "arch.pretrained": _absolute(args.from_pretrained), "arch.task": args.task,
        "arch.max_length": args.max_length, "arch.name": args.name,
        "data.train": _absolute(args.data), "data.val": _absolute(args.val_data), "data.test": _absolute(args.test_data),
        "data.val_fraction": args.val_fraction,
        "data.labels": [x.strip() for x in args.labels.split(",")] if args.labels is not None else None,
    }
    if args.lora:
        values["arch.lora"] = {k: v for k, v in lora_flags.items() if v is not None}
    if args.lr is None and not args.config:
        values["optimizer.lr"] = FINETUNE_LR["lora" if args.lora else "full"]
    return values


def load(args: argparse.Namespace):
    """The validated run configuration: defaults, then --config, then flags (nothing runs before this passes)."""
    from training.config import resolve

    overrides = overrides_from(args)
    if overrides.get("model") is None and overrides.get("spec") is None and not args.config:
        raise UserError("no model given: pass --model NAME or --spec FILE.py:CLASS (or set `model` in --config)")
    return resolve(args.config, overrides)


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args(PROG, DESCRIPTION, add_arguments, argv, args, EPILOG)
    config = load(args)
    if config.sidecar.enabled:
        return run_sidecar(config, args.run_dir)
    return run_once(config, args.run_dir)


def run_once(config, run_dir: str) -> int:
    from training import distributed
    from training.trainer import StopFlag, Trainer

    ctx = distributed.setup(config.device)
    stop = StopFlag()
    stop.install()
    trainer = Trainer(config, run_dir, ctx, stop)
    try:
        trainer.setup()
        result = trainer.train()
        if result.reason == "signal":
            if ctx.is_main:
                print(result.message, file=sys.stderr, flush=True)
            return 143 if stop.requested == "SIGTERM" else 130
        summary = trainer.finish()
        if ctx.is_main:
            print(f"done: {result.message}; test accuracy {100 * summary['test_accuracy']:.2f}% "
                  f"with the {summary['weights']} weights; exported {summary['safetensors']} and {summary['manifest']}",
                  file=sys.stderr, flush=True)
        return 0
    finally:
        trainer.close()
        stop.uninstall()
        distributed.teardown(ctx)


def run_sidecar(config, run_dir: str) -> int:
    from training import distributed, sidecar
    from training.trainer import StopFlag, Trainer

    config = sidecar.with_checkpoint_period(config)
    ctx = distributed.setup(config.device)
    stop = StopFlag()
    stop.install()
    trainer = Trainer(config, run_dir, ctx, stop)
    try:
        return sidecar.serve(trainer, stop)
    finally:
        trainer.close()
        stop.uninstall()
        distributed.teardown(ctx)
