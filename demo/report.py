"""Step 6 of the demo: one Markdown report that links every result a user would want to look at."""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.files import atomic_write_text
from common.manifest import MANIFEST_NAME, read_manifest
from demo.config import ROOT, DemoConfig


def _rel(path: Path, start: Path) -> str:
    """A link that works from the report's folder (Markdown viewers resolve links relative to the file)."""
    return os.path.relpath(Path(path).resolve(), start.resolve())


def write_report(config: DemoConfig, server_version: str, queries: dict, load_json: Path, panels_dir: Path,
                 timings: dict[str, float], search: dict | None = None) -> Path:
    results_dir = ROOT / config.results_dir
    out = results_dir / "demo-report.md"
    load = json.loads(load_json.read_text()) if load_json.is_file() else None
    lines = ["# Demo report", "", f"Server: {server_version}, repository `{config.repository}`.", ""]
    lines += ["## Training runs", ""]
    for step in config.train:
        run_dir = ROOT / step.run_dir
        found = read_manifest(run_dir, verify=False).metrics if (run_dir / MANIFEST_NAME).is_file() else {}
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in found.items() if "acc" in k)
        curves = ROOT / step.run_dir / "training_curves.png"
        lines.append(f"- `{step.model}` in `{step.run_dir}`: {metrics or 'no metrics'}"
                     + (f" — ![curves]({_rel(curves, results_dir)})" if curves.is_file() else ""))
    lines += ["", "## Predictions: PyTorch vs Triton over HTTP and gRPC", ""]
    for model, result in queries.items():
        lines += [f"### {model}", "", "| input | true | PyTorch | HTTP | gRPC |", "|---|---|---|---|---|"]
        for row in result["rows"]:
            lines.append(f"| {row['input']} | {row['true']} | {row['pytorch']} | {row['http']} | {row['grpc']} |")
        lines.append("")
    if search:
        lines += [f"## Semantic search: `{search['model']}` over {search['corpus']} held-out support messages", "",
                  f"Every indexed vector agrees with sentence-transformers to cosine "
                  f"{search['min_cosine_to_reference']} or better; HTTP and gRPC rank alike.", "",
                  "| query | top match | cosine | same top match as sentence-transformers |", "|---|---|---|---|"]
        for row in search["queries"]:
            top = row["hits"][0]
            text = top["text"] if len(top["text"]) <= 80 else top["text"][:77] + "..."
            lines.append(f"| {row['query']} | {text} | {top['score']} | {'yes' if row['same_top1_as_reference'] else 'no'} |")
        lines.append("")
    if load:
        r = load["result"]
        lines += ["## Load test (Locust)", "",
                  f"{r['model']} over {r['protocol']}, {r['concurrency']} users, {r['duration_s']} s:", "",
                  "| requests/s | p50 ms | p95 ms | p99 ms | errors | server CPU cores | load generator CPU cores |",
                  "|---|---|---|---|---|---|---|",
                  f"| {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']}/{r['requests']} "
                  f"| {r['cpu_cores']['server']} | {r['cpu_cores']['load_generator']} |", ""]
        if r.get("server_side") and r["server_side"].get("requests"):
            s = r["server_side"]
            batch = (f"; average executed batch {s['avg_batch_size']}" if s.get("avg_batch_size") is not None
                     else " (an ensemble: the sum of its steps)")
            lines += [f"Inside Triton, per request: queue {s['queue_ms']} ms, compute input {s['compute_input_ms']} ms, "
                      f"infer {s['compute_infer_ms']} ms, output {s['compute_output_ms']} ms{batch}.", ""]
            if s.get("steps"):
                lines += ["| step | queue ms | compute infer ms | average executed batch |", "|---|---|---|---|"]
                lines += [f"| {t['model']} | {t.get('queue_ms')} | {t.get('compute_infer_ms')} | {t.get('avg_batch_size')} |"
                          for t in s["steps"]]
                lines += [""]
        if load.get("plot"):
            lines += [f"![load test]({_rel(Path(load['plot']), results_dir)})", ""]
    overview = ROOT / panels_dir / "overview.png"
    if overview.is_file():
        lines += ["## Monitoring panels (from Prometheus)", "", f"![panels]({_rel(overview, results_dir)})", ""]
        agreement = ROOT / panels_dir / "agreement.json"
        if agreement.is_file():
            from demo.panel_check import describe

            lines += [describe(json.loads(agreement.read_text())) + ".", ""]
    lines += ["## Timings", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
