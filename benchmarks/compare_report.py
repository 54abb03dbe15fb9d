"""What ``compare`` found: ``compare.json`` (rows), the Markdown report, the summary and the plots.

The issue's targets are ratios inside one run, because a shared 2-core machine drifts by tens of percent between runs:

1. Triton (best CPU configuration) at the highest concurrency serves >= 5x the FastAPI+PyTorch baseline's throughput,
   with p99 <= 1/4 of the baseline's;
2. Triton's best throughput is >= 0.75x the best in-process ONNX Runtime throughput;
3. at concurrency 1, Triton adds <= 0.5 ms to in-process ONNX Runtime's p50 (FP32 against FP32), and its p99 <= 2 ms.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.files import atomic_write_json, atomic_write_text
from common.plots import save_png

TRITON_FAMILIES = ("triton", "tuning")


def _best(rows: list[dict], predicate) -> dict | None:
    candidates = [r for r in rows if predicate(r) and r["requests"] > 0]
    return max(candidates, key=lambda r: r["throughput_rps"]) if candidates else None


def evaluate_targets(rows: list[dict], concurrency: list[int]) -> list[dict]:
    top = max(concurrency)
    out = []
    baseline = _best(rows, lambda r: r["family"] == "baseline" and r["concurrency"] == top)
    triton_top = _best(rows, lambda r: r["family"] in TRITON_FAMILIES and r["concurrency"] == top)
    if baseline and triton_top:
        ratio = triton_top["throughput_rps"] / max(baseline["throughput_rps"], 1e-9)
        p99_ratio = triton_top["p99_ms"] / baseline["p99_ms"]
        out.append({"target": f"Triton at concurrency {top} >= 5x FastAPI+PyTorch throughput with p99 <= 1/4",
                    "met": ratio >= 5 and p99_ratio <= 0.25,
                    "numbers": f"{triton_top['config']} {triton_top['throughput_rps']:.0f} req/s vs "
                               f"{baseline['throughput_rps']:.0f} req/s = {ratio:.2f}x; p99 {triton_top['p99_ms']:.1f} ms vs "
                               f"{baseline['p99_ms']:.1f} ms = {p99_ratio:.2f}x"})
    ort_best = _best(rows, lambda r: r["config"].startswith("onnxruntime") and "cuda" not in r["config"])
    triton_best = _best(rows, lambda r: r["family"] in TRITON_FAMILIES)
    if ort_best and triton_best:
        ratio = triton_best["throughput_rps"] / ort_best["throughput_rps"]
        out.append({"target": "Triton's best throughput >= 0.75x the best in-process ONNX Runtime throughput",
                    "met": ratio >= 0.75,
                    "numbers": f"{triton_best['config']} c={triton_best['concurrency']} {triton_best['throughput_rps']:.0f} "
                               f"req/s vs {ort_best['config']} c={ort_best['concurrency']} {ort_best['throughput_rps']:.0f} "
                               f"seq/s = {ratio:.2f}x"})
    ort_c1 = next((r for r in rows if r["config"] == "onnxruntime-fp32" and r["concurrency"] == 1 and r["requests"]), None)
    fp32_c1 = [r for r in rows if r["family"] in TRITON_FAMILIES and r["concurrency"] == 1 and r["requests"]
               and r.get("model_variant") != "l4_int8"]
    if ort_c1 and fp32_c1:
        best = min(fp32_c1, key=lambda r: r["p50_ms"])
        added = best["p50_ms"] - ort_c1["p50_ms"]
        out.append({"target": "at concurrency 1 Triton adds <= 0.5 ms to in-process ONNX Runtime's p50 and keeps p99 <= 2 ms",
                    "met": added <= 0.5 and best["p99_ms"] <= 2.0,
                    "numbers": f"{best['config']} p50 {best['p50_ms']:.2f} ms vs onnxruntime-fp32 p50 {ort_c1['p50_ms']:.2f} ms "
                               f"= +{added:.2f} ms; p99 {best['p99_ms']:.2f} ms"})
    return out


def ladder_table(rows: list[dict], labels: dict[str, str], top: int) -> list[str]:
    """Each tuning step at c=1 and c=top, with the change against the previous step."""
    by = {(r["config"].removeprefix("tuning:"), r["concurrency"]): r for r in rows if r["family"] == "tuning"}
    lines = ["| step | c=1 p50 ms | c=1 p99 ms | c=%d req/s | c=%d p99 ms | change at c=%d |" % (top, top, top),
             "|---|---|---|---|---|---|"]
    previous = None
    for name, label in labels.items():
        one, many = by.get((name, 1)), by.get((name, top))
        if not one or not many:
            continue
        change = ""
        if previous is not None and not name.startswith("b_"):
            change = f"{(many['throughput_rps'] / max(previous['throughput_rps'], 1e-9) - 1) * 100:+.0f} % req/s"
        lines.append(f"| {label} | {one['p50_ms']} | {one['p99_ms']} | {many['throughput_rps']:.0f} | {many['p99_ms']} | {change} |")
        if not name.startswith("b_"):
            previous = many
    json_row = by.get(("http-json", top))
    if json_row and ("defaults", top) in by:
        lines.append(f"| {json_row['description']} | | | {json_row['throughput_rps']:.0f} | {json_row['p99_ms']} | "
                     f"{(json_row['throughput_rps'] / by[('defaults', top)]['throughput_rps'] - 1) * 100:+.0f} % vs gRPC |")
    return lines


def _plots(rows: list[dict], latencies: dict, results_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in rows if r["family"] in ("in-process", "triton", "baseline")]
    configs = sorted({r["config"] for r in sweep}, key=lambda c: (c.startswith("onnx"), c))
    paths = []
    for metric, ylabel, name, log in (("throughput_rps", "requests (sequences) per second", "compare_throughput.png", False),
                                      ("p99_ms", "p99 latency (ms)", "compare_p99.png", True)):
        fig, ax = plt.subplots(figsize=(10, 6))
        for config in configs:
            points = sorted((r["concurrency"], r[metric]) for r in sweep if r["config"] == config and r[metric] is not None)
            if points:
                style = "--" if any(r["family"] == "in-process" for r in sweep if r["config"] == config) else "-"
                ax.plot(*zip(*points), style, marker="o", label=config)
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("concurrency (batch-1 requests in flight)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"textclf: {ylabel} vs concurrency (dashed: in-process)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_png(fig, results_dir / name)
        paths.append(results_dir / name)
    levels = sorted({c for (_, c) in latencies})
    c_cdf = 16 if 16 in levels else levels[-1]
    fig, ax = plt.subplots(figsize=(10, 6))
    for config in configs:
        lat = latencies.get((config, c_cdf))
        if lat:
            values = np.sort(np.asarray(lat))
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=config)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"textclf: latency CDF at concurrency {c_cdf}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, results_dir / "compare_latency_cdf.png")
    return paths + [results_dir / "compare_latency_cdf.png"]


def write_outputs(rows: list[dict], latencies: dict, plan, machine: dict, skipped: list[str], results_dir: Path,
                  elapsed_s: float, labels: dict[str, str]) -> dict:
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / "compare.json", rows)
    targets = evaluate_targets(rows, plan.concurrency)
    target_lines = [f"{'MET ' if t['met'] else 'MISSED'} {t['target']}: {t['numbers']}" for t in targets]
    plots = _plots(rows, latencies, results_dir)
    top = max(plan.concurrency)
    md = ["# Serving textclf side by side", "",
          f"textclf at its default size (d_model 128, 4 heads, 2 layers, ff 512, vocabulary ~8k), {plan.seq_len} tokens per "
          f"request, batch-1 requests, concurrency {'/'.join(map(str, plan.concurrency))}, {plan.duration_s:g} s measured "
          f"per point after {plan.warmup_s:g} s warm-up; load generator on the same machine. Run took {elapsed_s:.0f} s.", "",
          "## Machine", "",
          f"{machine['cpu_model']}, {machine['cpu_cores']} cores, {machine['memory_gib']} GiB, GPUs: "
          f"{', '.join(machine['gpus']) or 'none'}; Python {machine['python']}; "
          + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()), "",
          "## Targets", ""] + [f"- {line}" for line in target_lines] + [""]
    if skipped:
        md += ["Not measured on this machine:", ""] + [f"- {s}" for s in skipped] + [""]
    md += ["## Results", "",
           "| config | protocol | c | req/s | p50 ms | p95 ms | p99 ms | errors | server cores | load-gen cores | "
           "Triton queue / infer ms per request, avg batch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        side = r.get("server_side") or {}
        inside = (f"{side.get('queue_ms')} / {side.get('compute_infer_ms')}, {side.get('avg_batch_size')}"
                  if side.get("requests") else "")
        md.append(f"| {r['config']} | {r['protocol']} | {r['concurrency']} | {r['throughput_rps']:.0f} | {r['p50_ms']} | "
                  f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['cpu_server_cores']} | {r['cpu_loadgen_cores'] or ''} | "
                  f"{inside} |")
    md += ["", "## What each tuning step bought (Triton over gRPC)", "",
           "The builders' CPU configuration, one change per step from the first defaults to today's; branches are "
           f"alternatives measured beside the ladder. Each cell is the median of {plan.ladder_rounds} interleaved "
           "rounds (every round visits every step), so slow drift of the machine does not favour one step.", ""]
    md += ladder_table(rows, labels, top)
    md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    errors = [r for r in rows if r["errors"]]
    if errors:
        md += ["", "## Errors", ""] + [f"- {r['config']} c={r['concurrency']}: {r['errors']} — "
                                       + "; ".join(f"{k['count']} × {k['error']}" for k in r["error_kinds"]) for r in errors]
    atomic_write_text(results_dir / "compare-report.md", "\n".join(md) + "\n")
    summary = {"targets": targets, "target_lines": target_lines, "skipped": skipped, "machine": machine,
               "plan": {"concurrency": plan.concurrency, "seq_len": plan.seq_len, "duration_s": plan.duration_s,
                        "warmup_s": plan.warmup_s}, "elapsed_s": round(elapsed_s, 1),
               "plots": [str(p) for p in plots]}
    atomic_write_json(results_dir / "compare-summary.json", summary)
    return summary
