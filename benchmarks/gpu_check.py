"""``python -m benchmarks gpu-check``: everything in this repository that only a GPU can run, in one go (< 8 minutes).

The first time a machine with an NVIDIA GPU is at hand, this one command answers whether the GPU path works::

    bash docker/gpu-check.sh                  # on a host with PyTorch + CUDA (installs the rest offline, see below)
    # or in the NGC builder image of the compose stack (.env filled in), keeping the JSON on the host:
    docker compose run --rm -v "$PWD/benchmarks/results:/app/benchmarks/results" prepare-models python -m benchmarks gpu-check

It prints a table of PASS / FAIL / SKIP rows with their figures and writes them as JSON
(``benchmarks/results/gpu-check.json``; exit status 1 when a row FAILed):

* **AMP training**: ``python -m training`` on both built-in models (digits, textclf) with ``--amp fp16`` and
  ``--amp bf16`` on CUDA: every loss finite, and a run killed (``kill -9``) after step 7 and resumed ends with the
  same exported weights, byte for byte, as the uninterrupted run;
* **NCCL**: a process group with the NCCL backend, all-reduce and one DistributedDataParallel step, with world size 1,
  with 2 processes sharing one GPU (NCCL may refuse that: SKIP with its reason), and the real trainer under
  ``torchrun`` with one process per GPU when there are two or more;
* **NVML exporter** (``monitoring/gpu_exporter.py``): one scrape, with the GPU count, memory, power, temperature;
* **inference**: PyTorch eager vs ``torch.compile`` vs ONNX Runtime's CUDA provider on the served models (the ONNX
  files ``python -m builders build`` makes), batch 1 and 32: latency, and the largest difference from eager;
* **TensorRT** (when ``tensorrt`` imports): the build of each model with ``--tensorrt required`` (plan, plan metadata,
  the host compatibility check, engine parity against ONNX Runtime), and a version-compatible plan loaded with
  ``engine_host_code_allowed`` after a timing cache TensorRT must reject;
* **the repository's GPU tests** (``pytest -m "gpu or tensorrt"``, when pytest is installed): CUDA shared memory
  through the real Triton, AMP checkpoints, the NVML exporter, a plan built and published on this host.

Every row that cannot run here says why (no CUDA GPU, no TensorRT, a package missing, the time budget spent), so on a
CPU machine the command still runs and reports SKIP for every GPU row. It needs PyTorch with CUDA and this
repository's Python dependencies (``docker/gpu-check.sh`` installs them from a wheelhouse without internet, see
``docker/gpu-check-bundle.sh``); nothing is downloaded at run time.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu-check.json"
MODELS = ("digits", "textclf")
TRAIN_ARGS = ["--seed", "0", "--epochs", "2", "--progress", "off", "--max-train-samples", "640", "--batch-size", "64",
              "--checkpoint-every-steps", "3", "--keep-last", "2"]
DATA_ARGS = {"textclf": ["--set", "data.train_size=1536", "--set", "data.val_size=128", "--set", "data.test_size=128"]}
KILL_AFTER_STEP = 7  # of 20 steps (640 samples / 64 x 2 epochs): after the checkpoint at step 6
INFERENCE_TOLERANCE = 1e-2  # largest |difference| from eager on the first output (TF32 and fused kernels differ)


@dataclass
class Row:
    section: str
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:400]


def _run(cmd: Sequence[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=REPO_ROOT, capture_output=True, text=True, timeout=max(timeout, 5),
                          env={**os.environ, **(env or {})})


class GpuCheck:
    """Collects rows; each section adds its own and never stops the others."""

    def __init__(self, work: Path, budget: Budget, device: str = "cuda"):
        self.work = work
        self.budget = budget
        self.device = device  # "cpu": the plumbing run that checks this script itself on a machine without a GPU
        self.rows: list[Row] = []
        self.cuda_reason: str | None = None  # why there is no usable CUDA GPU (None: there is one)
        self.runs: dict[str, Path] = {}  # model -> a finished training run (for the builds)
        self.builds: dict[str, dict] = {}  # model -> build report

    def add(self, section: str, name: str, status: str, detail: str = "", seconds: float = 0.0, **figures) -> Row:
        row = Row(section, name, status, detail, figures, round(seconds, 1))
        self.rows.append(row)
        if status != "SKIP":  # progress for what ran; the table at the end lists everything
            print(f"[gpu-check] {status:4} {name}" + (f": {detail}" if detail else ""), file=sys.stderr, flush=True)
        return row

    def section(self, name: str, rows: Sequence[str], action: Callable[[], None], on_cpu: bool = False,
                min_seconds: float = 20.0) -> None:
        """Run ``action``; the ``rows`` it would have added are SKIP with the reason when it cannot run.

        ``on_cpu``: the section also runs in the CPU plumbing run (``--device cpu``)."""
        reason = None
        if self.device == "cpu" and not on_cpu:
            reason = "needs a GPU (not part of the --device cpu plumbing run)"
        elif self.device == "cuda" and self.cuda_reason:
            reason = self.cuda_reason
        elif self.budget.left() < min_seconds:
            reason = f"time budget spent ({self.budget.seconds:.0f} s; raise --budget)"
        if reason:
            for row in rows:
                self.add(name, row, "SKIP", reason)
            return
        before = len(self.rows)
        start = time.monotonic()
        try:
            action()
        except Exception as exc:  # a broken section is a FAIL row, never the end of the check
            done = {r.name for r in self.rows[before:]}
            for row in rows:
                if row not in done:
                    self.add(name, row, "FAIL", f"{type(exc).__name__}: {exc}", time.monotonic() - start)

    # -- environment -------------------------------------------------------------------------------------------------
    def environment(self) -> None:
        import torch

        facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                                 "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
        try:
            from common.ort_install import inspect_install

            facts["onnxruntime"] = inspect_install().summary()
        except Exception as exc:
            facts["onnxruntime"] = f"unknown ({exc})"
        try:
            import tensorrt

            facts["tensorrt"] = tensorrt.__version__
        except Exception as exc:
            facts["tensorrt"] = f"not importable ({type(exc).__name__})"
        if self.device == "cpu":
            self.add("environment", "environment", "PASS", "CPU plumbing run (--device cpu): it checks this script "
                     "on CPU (AMP off, no NCCL, NVML or TensorRT), not the GPU path", **facts)
            return
        if not torch.cuda.is_available():
            self.cuda_reason = (f"no CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
                                f"built for CUDA {torch.version.cuda or 'none'})")
        else:
            facts["gpus"] = [f"{torch.cuda.get_device_name(i)} (cc {'.'.join(map(str, torch.cuda.get_device_capability(i)))})"
                             for i in range(torch.cuda.device_count())]
            facts["bf16_supported"] = torch.cuda.is_bf16_supported()
            try:
                x = torch.randn(256, 256, device="cuda")
                facts["matmul_ok"] = bool(torch.isfinite(x @ x).all().item())
            except Exception as exc:
                self.cuda_reason = f"CUDA is visible but unusable: {type(exc).__name__}: {exc}"
        self.add("environment", "environment", "PASS" if not self.cuda_reason else "SKIP",
                 self.cuda_reason or "CUDA GPU usable", **facts)

    # -- AMP training ------------------------------------------------------------------------------------------------
    def training(self) -> None:
        import torch

        jobs = []
        for model in MODELS:
            for amp in ("fp16", "bf16"):
                name = f"train {model} --amp {amp}: loss finite, kill -9 + resume exact"
                if self.device == "cpu" and amp == "bf16":
                    self.add("training", name, "SKIP", "--device cpu: one AMP row is enough to check the plumbing")
                    continue
                if amp == "bf16" and not torch.cuda.is_bf16_supported():
                    self.add("training", name, "SKIP", "this GPU has no bf16 support (torch.cuda.is_bf16_supported())")
                    continue
                jobs.append((name, model, amp))
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: self._train_and_resume(*job), jobs))
        for row in results:
            self.rows.append(row)
            print(f"[gpu-check] {row.status:4} {row.name}" + (f": {row.detail}" if row.detail else ""),
                  file=sys.stderr, flush=True)
        for (_name, model, amp), row in zip(jobs, results):  # the builds use a finished run, fp16 preferred
            reference = self.work / "train" / f"{model}-{amp}" / "reference"
            if model not in self.runs and (reference / "manifest.json").is_file():
                self.runs[model] = reference

    def _train_and_resume(self, name: str, model: str, amp: str) -> Row:
        start = time.monotonic()
        base = [sys.executable, "-m", "training", "--model", model, "--device", self.device,
                "--amp", amp if self.device == "cuda" else "off",
                *TRAIN_ARGS, *DATA_ARGS.get(model, [])]
        folder = self.work / "train" / f"{model}-{amp}"
        reference, resumed = folder / "reference", folder / "resumed"
        timeout = max(self.budget.left() - 10, 30)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            ref = pool.submit(_run, base + ["--run-dir", str(reference)], timeout)
            killed = pool.submit(_run, base + ["--run-dir", str(resumed)], timeout,
                                 {"TRAINING_FAULT_KILL_AFTER_STEP": str(KILL_AFTER_STEP)}).result()
            ref = ref.result()
        if ref.returncode != 0:
            return Row("training", name, "FAIL", f"training failed (status {ref.returncode}): {_tail(ref.stderr)}",
                       seconds=round(time.monotonic() - start, 1))
        if killed.returncode != -9:
            return Row("training", name, "FAIL", f"the fault-injected run was not killed after step {KILL_AFTER_STEP} "
                       f"(status {killed.returncode}): {_tail(killed.stderr)}", seconds=round(time.monotonic() - start, 1))
        again = _run(base + ["--run-dir", str(resumed)], max(self.budget.left() - 5, 30))
        seconds = round(time.monotonic() - start, 1)
        if again.returncode != 0:
            return Row("training", name, "FAIL", f"resume failed (status {again.returncode}): {_tail(again.stderr)}",
                       seconds=seconds)
        match = re.search(r"resuming from \S+ \(epoch \d+, batch \d+, step (\d+)\)", again.stderr)
        records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [r[k] for r in records for k in ("train_loss", "val_loss") if r.get(k) is not None]
        figures: dict[str, Any] = {"steps": records[-1].get("step") if records else None,
                                   "train_loss": records[-1].get("train_loss") if records else None,
                                   "val_accuracy": records[-1].get("val_accuracy") if records else None,
                                   "resumed_from_step": int(match.group(1)) if match else None}
        identical, max_diff = _same_weights(reference / "model.safetensors", resumed / "model.safetensors")
        figures.update(identical=identical, max_abs_diff=max_diff)
        if not losses or not all(math.isfinite(v) for v in losses):
            return Row("training", name, "FAIL", f"non-finite loss in {reference / 'metrics.jsonl'}", figures, seconds)
        if not match:
            return Row("training", name, "FAIL", "the second run did not resume from a checkpoint", figures, seconds)
        if not identical:
            return Row("training", name, "FAIL", f"resumed weights differ from the uninterrupted run (max |diff| "
                       f"{max_diff:.3g})", figures, seconds)
        return Row("training", name, "PASS", "" if self.device == "cuda" else "on CPU with --amp off (--device cpu)",
                   figures, seconds)

    # -- NCCL ----------------------------------------------------------------------------------------------------------
    def nccl(self) -> None:
        import torch

        for procs, label in ((1, "NCCL world size 1: all-reduce + DDP step"),
                             (2, "NCCL 2 processes on one GPU: all-reduce + DDP step")):
            start = time.monotonic()
            out = self.work / f"nccl-{procs}"
            out.mkdir(parents=True, exist_ok=True)
            done = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                         "-m", "benchmarks.gpu_check", "--nccl-worker", str(out)], min(120, self.budget.left()))
            results = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
            seconds = time.monotonic() - start
            if done.returncode == 0 and len(results) == procs and all(r["ok"] for r in results):
                self.add("nccl", label, "PASS", "", seconds, nccl_version=results[0].get("nccl"), world_size=procs,
                         allreduce=results[0]["allreduce"], grads_equal_across_ranks=results[0]["grads_equal"])
            elif procs == 2 and re.search(r"[Dd]uplicate GPU|same (CUDA )?device|both on CUDA device", done.stderr + done.stdout):
                self.add("nccl", label, "SKIP", "NCCL refuses two ranks on one GPU: " + _tail(done.stderr, 1), seconds)
            else:
                self.add("nccl", label, "FAIL", f"status {done.returncode}: {_tail(done.stderr)}", seconds)
        label = "trainer under torchrun, NCCL, one process per GPU (2 GPUs)"
        if torch.cuda.device_count() < 2:
            self.add("nccl", label, "SKIP", f"needs 2 GPUs, this host has {torch.cuda.device_count()}")
            return
        start = time.monotonic()
        run_dir = self.work / "ddp-2gpu"
        done = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                     "training", "--model", "digits", "--run-dir", str(run_dir), "--device", "cuda", "--amp", "off",
                     *TRAIN_ARGS], min(180, self.budget.left()))
        ok = done.returncode == 0 and "nccl" in (done.stdout + done.stderr) and (run_dir / "model.safetensors").is_file()
        self.add("nccl", label, "PASS" if ok else "FAIL", "" if ok else f"status {done.returncode}: {_tail(done.stderr)}",
                 time.monotonic() - start)

    # -- NVML exporter -------------------------------------------------------------------------------------------------
    def nvml(self) -> None:
        from prometheus_client import generate_latest
        from prometheus_client.parser import text_string_to_metric_families

        from monitoring.gpu_exporter import NvmlCollector, registry

        collector = NvmlCollector()
        text = generate_latest(registry(collector)).decode()
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

        def values(name: str) -> list[float]:
            return [s.value for s in samples if s.name == name]

        gpus = values("gpu_exporter_gpus")
        name = "NVML exporter: one scrape has every GPU's readings"
        if not gpus or gpus[0] == 0:
            info = [s.labels for s in samples if s.name == "gpu_exporter_info"]
            reason = info[0].get("reason", "") if info else "no gpu_exporter_info"
            self.add("nvml", name, "SKIP" if self.cuda_reason else "FAIL", f"the exporter sees no GPU ({reason})")
            return
        memory = values("gpu_memory_total_bytes")
        figures = {"gpus": int(gpus[0]), "memory_total_gib": [round(v / 2**30, 1) for v in memory],
                   "memory_used_gib": [round(v / 2**30, 2) for v in values("gpu_memory_used_bytes")],
                   "power_watts": values("gpu_power_watts"), "temperature_c": values("gpu_temperature_celsius"),
                   "utilization": values("gpu_utilization_ratio"),
                   "read_errors": sum(values("gpu_exporter_read_errors_total"))}
        ok = len(memory) >= gpus[0] and all(v > 0 for v in memory)
        self.add("nvml", name, "PASS" if ok else "FAIL", "" if ok else "memory readings missing", **figures)

    # -- builds (ONNX, INT8, TensorRT) ----------------------------------------------------------------------------------
    def builds_and_tensorrt(self, tensorrt_reason: str | None) -> None:
        for model in MODELS:
            build_row = f"build {model}: ONNX + INT8 + configs (python -m builders build)"
            trt_rows = [f"TensorRT {model}: plan built", f"TensorRT {model}: plan metadata + host compatibility",
                        f"TensorRT {model}: engine parity vs ONNX Runtime"]
            run_dir = self.runs.get(model)
            if run_dir is None:
                for row in [build_row, *trt_rows]:
                    self.add("build", row, "SKIP", f"no trained {model} run (its training row failed or was skipped)")
                continue
            if self.budget.left() < 40:
                for row in [build_row, *trt_rows]:
                    self.add("build", row, "SKIP", "time budget spent")
                continue
            start = time.monotonic()
            report_file = self.work / f"build-{model}.json"
            done = _run([sys.executable, "-m", "builders", "build", "--run-dir", str(run_dir), "--repository",
                         str(self.work / "model_repository"), "--work-dir", str(self.work / "builds"),
                         "--tensorrt", "off" if tensorrt_reason else "required", "--report", str(report_file),
                         "--quiet"], max(self.budget.left() - 10, 30))
            seconds = time.monotonic() - start
            build_dir = _newest(self.work / "builds" / model)
            report = _read_json(report_file) or _read_json(build_dir / "report.json" if build_dir else None) or {}
            steps = {s["name"]: s for s in (_read_json(build_dir / "status.json") or {}).get("steps", [])} \
                if build_dir else {}
            onnx = build_dir / "export" / "model.onnx" if build_dir else None
            if onnx is not None and onnx.is_file():
                self.builds[model] = {"onnx": onnx, "run_dir": run_dir}
            # this row is about ONNX and INT8; a failed TensorRT step is reported by the TensorRT rows below
            ok = (steps.get("export", {}).get("status") == "ok"
                  and steps.get("quantize", {}).get("status") in ("ok", "skipped"))
            failed = [f"{n}: {s.get('detail', '')}" for n, s in steps.items() if s.get("status") == "failed"]
            self.add("build", build_row, "PASS" if ok else "FAIL",
                     "" if ok else ("; ".join(failed) or _tail(done.stderr)), seconds,
                     accuracy=report.get("accuracy"), onnx_nodes=(report.get("onnx") or {}).get("nodes"),
                     int8_accepted=(report.get("int8") or {}).get("accepted"), exit_status=done.returncode)
            if tensorrt_reason:
                for row in trt_rows:
                    self.add("tensorrt", row, "SKIP", tensorrt_reason)
                continue
            self._tensorrt_rows(model, trt_rows, steps, report, build_dir)

    def _tensorrt_rows(self, model: str, names: list[str], steps: dict, report: dict, build_dir: Path | None) -> None:
        from builders.tensorrt_meta import check_compatible, host_info, read_metadata

        step = steps.get("tensorrt", {})
        plan = build_dir / "tensorrt" / "model.plan" if build_dir else None
        if step.get("status") != "ok" and not (plan and plan.is_file()):
            for name in names:
                self.add("tensorrt", name, "FAIL", step.get("detail") or "the tensorrt step did not run")
            return
        self.add("tensorrt", names[0], "PASS", "", step.get("seconds", 0.0), plan_mib=round(plan.stat().st_size / 2**20, 2))
        meta = read_metadata(plan)
        problems = check_compatible(meta, host_info(), str(plan))
        self.add("tensorrt", names[1], "FAIL" if problems else "PASS", "; ".join(problems),
                 tensorrt=meta.tensorrt_version, gpu=meta.gpu_name, compute_capability=meta.compute_capability,
                 precision=meta.precision, profiles=len(meta.profiles))
        parity = (report.get("tensorrt") or {}).get("parity") or {}
        if step.get("status") == "ok":
            self.add("tensorrt", names[2], "PASS", "", **{f"parity_{k}": v for k, v in parity.items()
                                                          if not isinstance(v, (list, dict))})
        else:
            self.add("tensorrt", names[2], "FAIL", step.get("detail", ""))

    def version_compatible_plan(self, tensorrt_reason: str | None) -> None:
        names = ["TensorRT: a rejected timing cache is replaced by a fresh one (build goes on)",
                 "TensorRT: a version-compatible plan loads with engine_host_code_allowed"]
        if tensorrt_reason:
            for name in names:
                self.add("tensorrt", name, "SKIP", tensorrt_reason)
            return
        build = self.builds.get("digits")
        if build is None:
            for name in names:
                self.add("tensorrt", name, "SKIP", "no digits ONNX file (its build row failed or was skipped)")
            return
        import tensorrt as trt
        import torch

        from builders.tensorrt_build import deserialize_engine, timing_cache_path

        folder = self.work / "version-compatible"
        template = folder / "timing.cache"
        major, minor = torch.cuda.get_device_capability(0)
        keyed = timing_cache_path(template, trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}")
        keyed.parent.mkdir(parents=True, exist_ok=True)
        keyed.write_bytes(b"not a timing cache of this TensorRT " * 64)  # what a foreign or damaged cache looks like
        config = folder / "builders.toml"
        config.write_text(f'[tensorrt]\nversion_compatible = true\nprecision = "fp32"\ntiming_cache = "{template}"\n')
        start = time.monotonic()
        done = _run([sys.executable, "-m", "builders", "tensorrt", "--run-dir", str(build["run_dir"]), "--onnx",
                     str(build["onnx"]), "--output", str(folder / "plan"), "--config", str(config)],
                    max(self.budget.left() - 5, 30))
        seconds = time.monotonic() - start
        warned = "starting a fresh one" in done.stderr
        replaced = keyed.is_file() and not keyed.read_bytes().startswith(b"not a timing cache")
        ok = done.returncode == 0 and replaced
        self.add("tensorrt", names[0], "PASS" if ok else "FAIL",
                 "" if ok else f"status {done.returncode}, cache replaced: {replaced}: {_tail(done.stderr)}", seconds,
                 warning_seen=warned, cache_bytes_after=keyed.stat().st_size if keyed.is_file() else None)
        plan = folder / "plan" / "model.plan"
        if done.returncode != 0 or not plan.is_file():
            self.add("tensorrt", names[1], "FAIL", f"the version-compatible build failed: {_tail(done.stderr)}")
            return
        logger = trt.Logger(trt.Logger.ERROR)
        _runtime, engine = deserialize_engine(trt, logger, plan.read_bytes(), True, str(plan))
        refused = None
        try:
            deserialize_engine(trt, logger, plan.read_bytes(), False, str(plan))
        except Exception as exc:
            refused = str(exc)
        self.add("tensorrt", names[1], "PASS" if engine is not None else "FAIL", "", io_tensors=engine.num_io_tensors,
                 refused_without_host_code=bool(refused))

    # -- inference: eager vs torch.compile vs ONNX Runtime CUDA ---------------------------------------------------------
    def inference(self) -> None:
        for model in MODELS:
            names = [f"infer {model}: PyTorch eager CUDA", f"infer {model}: torch.compile CUDA",
                     f"infer {model}: ONNX Runtime CUDAExecutionProvider"]
            if model not in self.builds:
                for name in names:
                    self.add("inference", name, "SKIP", f"no {model} ONNX file (its build row failed or was skipped)")
                continue
            if self.budget.left() < 30:
                for name in names:
                    self.add("inference", name, "SKIP", "time budget spent")
                continue
            self._infer_model(model, names)

    def _infer_model(self, model: str, names: list[str]) -> None:
        import numpy as np
        import torch

        from builders.sources import SourceSpec, open_source

        source = open_source(SourceSpec(run_dir=self.builds[model]["run_dir"]))
        batch = next(iter(source.heldout().batches(32)))
        inputs32 = [np.ascontiguousarray(a) for a in batch.inputs]
        cases = {1: [a[:1] for a in inputs32], 32: inputs32}
        module = source.module().to(self.device).eval()

        def torch_fn(fn):
            def run(arrays):
                tensors = [torch.from_numpy(a).to(self.device) for a in arrays]
                with torch.inference_mode():
                    out = fn(*tensors)
                out = out if isinstance(out, (tuple, list)) else (out,)
                return [o.float().cpu().numpy() for o in out]
            return run

        eager = torch_fn(module)
        reference = {b: eager(a)[0] for b, a in cases.items()}
        start = time.monotonic()
        figures = _timings(eager, cases, reference)
        where = "" if self.device == "cuda" else "on CPU (--device cpu)"
        self.add("inference", names[0], "PASS", where, time.monotonic() - start, **figures)
        try:
            compiled = torch_fn(torch.compile(module))
            start = time.monotonic()
            figures = _timings(compiled, cases, reference)
            ok = figures["max_abs_diff"] <= INFERENCE_TOLERANCE
            self.add("inference", names[1], "PASS" if ok else "FAIL", where if ok else
                     f"differs from eager by {figures['max_abs_diff']:.3g}", time.monotonic() - start, **figures)
        except Exception as exc:
            self.add("inference", names[1], "FAIL", f"{type(exc).__name__}: {_tail(str(exc), 2)}")
        self._onnxruntime_cuda(model, names[2], cases, reference, where)

    def _onnxruntime_cuda(self, model: str, name: str, cases: dict, reference: dict, where: str) -> None:
        from common.ort_install import inspect_install

        install = inspect_install()
        provider = "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"
        if provider not in install.providers:
            self.add("inference", name, "SKIP", f"no CUDAExecutionProvider: {install.summary()} (the GPU build "
                     "onnxruntime-gpu replaces onnxruntime, see docker/requirements-ngc.txt)")
            return
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.builds[model]["onnx"]),
                                       providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
        if session.get_providers()[0] != provider:
            self.add("inference", name, "FAIL", f"the session fell back to {session.get_providers()} (CUDA libraries "
                     "of this onnxruntime-gpu build missing or mismatched)")
            return
        input_names = [i.name for i in session.get_inputs()]

        def run(arrays):
            return session.run(None, dict(zip(input_names, arrays)))

        start = time.monotonic()
        figures = _timings(run, cases, reference)
        ok = figures["max_abs_diff"] <= INFERENCE_TOLERANCE
        self.add("inference", name, "PASS" if ok else "FAIL", where if ok else
                 f"differs from eager by {figures['max_abs_diff']:.3g}", time.monotonic() - start,
                 onnxruntime=", ".join(f"{k} {v}" for k, v in install.distributions.items()), **figures)


GPU_TEST_FILES = ("tests/training/test_textclf_and_amp.py", "tests/monitoring/test_gpu_exporter.py",
                  "tests/builders/test_tensorrt_meta.py", "tests/clients/test_protocols.py")


def repository_gpu_tests(check: GpuCheck) -> None:
    """The repository's own ``gpu``/``tensorrt``-marked tests (CUDA shared memory through the real Triton among them)."""
    import importlib.util

    name = "pytest -m 'gpu or tensorrt': the repository's GPU tests (CUDA shared memory via Triton, AMP, NVML, plans)"
    if importlib.util.find_spec("pytest") is None:
        check.add("tests", name, "SKIP", "pytest is not installed (pip install pytest pytest-timeout)")
        return
    start = time.monotonic()
    done = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "gpu or tensorrt",
                 *GPU_TEST_FILES], max(check.budget.left() - 5, 30))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", done.stdout)}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    status = "FAIL" if failed or done.returncode not in (0, 5) else ("PASS" if counts.get("passed") else "SKIP")
    check.add("tests", name, status, "" if status == "PASS" else _tail(done.stdout, 4), time.monotonic() - start,
              passed=counts.get("passed", 0), failed=failed, skipped=counts.get("skipped", 0))


def _timings(run: Callable, cases: dict, reference: dict) -> dict[str, Any]:
    """p50/p90 latency (ms, host to host) and samples/s per batch size, and the largest difference from eager."""
    import numpy as np
    import torch

    figures: dict[str, Any] = {}
    worst = 0.0
    for size, arrays in cases.items():
        out = None
        for _ in range(5):  # warm-up (compilation, cuDNN/cuBLAS autotuning, ORT arena)
            out = run(arrays)
        worst = max(worst, float(np.max(np.abs(np.asarray(out[0], np.float32) - reference[size]))))
        times = []
        for _ in range(100 if size == 1 else 40):
            begin = time.perf_counter()
            run(arrays)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append((time.perf_counter() - begin) * 1000)
        times.sort()
        figures[f"b{size}_p50_ms"] = round(times[len(times) // 2], 3)
        figures[f"b{size}_p90_ms"] = round(times[int(len(times) * 0.9)], 3)
        figures[f"b{size}_samples_per_s"] = round(size * 1000 / times[len(times) // 2], 1)
    figures["max_abs_diff"] = worst
    return figures


def _same_weights(a: Path, b: Path) -> tuple[bool, float | None]:
    if not (a.is_file() and b.is_file()):
        return False, None
    if a.read_bytes() == b.read_bytes():
        return True, 0.0
    from safetensors.torch import load_file

    left, right = load_file(str(a)), load_file(str(b))
    worst = max((float((left[k].float() - right[k].float()).abs().max()) for k in left if k in right), default=math.inf)
    return False, worst


def _newest(folder: Path) -> Path | None:
    found = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return found[-1] if found else None


def _read_json(path: Path | None) -> dict | None:
    try:
        return json.loads(path.read_text()) if path and path.is_file() else None
    except (OSError, ValueError):
        return None


def tensorrt_unavailable() -> str | None:
    try:
        from builders.tensorrt_build import unavailable_reason
    except Exception as exc:
        return f"the builders cannot be imported here ({type(exc).__name__}: {exc})"
    return unavailable_reason()


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    for row in rows:
        figures = ", ".join(f"{k}={v}" for k, v in row.figures.items() if v is not None and k not in ("onnxruntime",))
        text = row.detail or figures
        if row.detail and figures and row.status != "SKIP":  # a PASS with a note, or a FAIL: both
            text = f"{row.detail} [{figures}]"
        print(f"{row.status:4}  {row.name:<{width}}  {text[:220]}")
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO_ROOT)})")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds the whole check may take (default 450); rows that no longer fit are SKIP")
    parser.add_argument("--work-dir", type=Path, help="keep the runs, builds and plans here (default: a temporary "
                                                      "folder, removed at the end)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a plumbing run that checks this script on a machine without a GPU (training with "
                             "AMP off, builds without TensorRT, inference on CPU; the GPU-only rows SKIP)")


def run(args: argparse.Namespace) -> int:
    from common.files import atomic_write_json

    started = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    temporary = None if args.work_dir else tempfile.mkdtemp(prefix="gpu-check-")
    work = Path(args.work_dir or temporary)
    work.mkdir(parents=True, exist_ok=True)
    check = GpuCheck(work, Budget(args.budget), args.device)
    try:
        check.environment()
        check.section("training", [f"train {m} --amp {a}: loss finite, kill -9 + resume exact"
                                   for m in MODELS for a in ("fp16", "bf16")], check.training, on_cpu=True,
                      min_seconds=60)
        check.section("nccl", ["NCCL world size 1: all-reduce + DDP step",
                               "NCCL 2 processes on one GPU: all-reduce + DDP step",
                               "trainer under torchrun, NCCL, one process per GPU (2 GPUs)"], check.nccl)
        check.section("nvml", ["NVML exporter: one scrape has every GPU's readings"], check.nvml)
        reason = check.cuda_reason or ("--device cpu" if args.device == "cpu" else tensorrt_unavailable())
        check.section("build", [f"build {m}: ONNX + INT8 + configs (python -m builders build)" for m in MODELS]
                      + [f"TensorRT {m}: {what}" for m in MODELS for what in
                         ("plan built", "plan metadata + host compatibility", "engine parity vs ONNX Runtime")],
                      lambda: check.builds_and_tensorrt(reason), on_cpu=True, min_seconds=40)
        check.section("tensorrt", ["TensorRT: a rejected timing cache is replaced by a fresh one (build goes on)",
                                   "TensorRT: a version-compatible plan loads with engine_host_code_allowed"],
                      lambda: check.version_compatible_plan(reason), min_seconds=30)
        check.section("inference", [f"infer {m}: {r}" for m in MODELS for r in
                                    ("PyTorch eager CUDA", "torch.compile CUDA", "ONNX Runtime CUDAExecutionProvider")],
                      check.inference, on_cpu=True)
        check.section("tests", ["pytest -m 'gpu or tensorrt': the repository's GPU tests (CUDA shared memory via "
                                "Triton, AMP, NVML, plans)"], lambda: repository_gpu_tests(check), min_seconds=60)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    counts = {s: sum(r.status == s for r in check.rows) for s in ("PASS", "FAIL", "SKIP")}
    result = {"format_version": 1, "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "seconds": seconds, "budget_s": args.budget, "summary": counts,
              "rows": [asdict(r) for r in check.rows]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output, result)
    print_table(check.rows)
    print(f"wrote {args.output} ({seconds:.0f} s)")
    return 1 if counts["FAIL"] else 0


# -- the NCCL worker, started by torchrun (one process per rank) ---------------------------------------------------------
def nccl_worker(out_dir: Path) -> int:
    """All-reduce and one DistributedDataParallel step over NCCL; with more ranks than GPUs they share GPU 0."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", timeout=_dt.timedelta(seconds=60))
    try:
        value = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(value)
        expected = world * (world + 1) / 2
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).to(device), device_ids=[device.index])
        torch.manual_seed(100 + rank)  # each rank its own data: DDP must average the gradients
        model(torch.randn(16, 8, device=device)).square().mean().backward()
        grad = model.module.weight.grad.detach().clone()
        gathered = [torch.empty_like(grad) for _ in range(world)]
        dist.all_gather(gathered, grad)
        grads_equal = all(torch.equal(g, gathered[0]) for g in gathered)
        ok = bool(torch.all(value == expected).item()) and grads_equal
        version = torch.cuda.nccl.version()  # a tuple in recent PyTorch, an int in older ones
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        (out_dir / f"rank-{rank}.json").write_text(json.dumps(
            {"ok": ok, "allreduce": float(value[0].item()), "expected": expected, "grads_equal": grads_equal,
             "nccl": nccl, "device": str(device)}))
        dist.barrier()
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--nccl-worker":
        sys.exit(nccl_worker(Path(sys.argv[2])))
    sys.exit("run it as: python -m benchmarks gpu-check")
