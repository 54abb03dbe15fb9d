"""What ``compare --model minilm`` found: ``compare-minilm.json`` (rows), the Markdown report, the summary and plots.

The issue's targets are ratios inside one run (a shared 2-core machine drifts by tens of percent between runs), all on
single-sentence requests:

1. our best served configuration at the highest concurrency: >= 1.2x Infinity's throughput, p99 no higher than its;
2. >= 5x the FastAPI + sentence-transformers baseline's throughput at the highest concurrency, p99 <= 1/4 of its;
3. >= 0.8x the in-process ONNX Runtime limit (ideal batching) of the same precision as the served encoder;
4. at concurrency 1, raw text through Triton has a p50 no higher than sentence-transformers ``encode`` of one
   sentence in-process.

A target whose rows are missing (a peer that could not run) is reported as not evaluated, with the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.windows import WindowPolicy
from common.files import atomic_write_json, atomic_write_text

WINDOW_ROUNDS = WindowPolicy.rounds

OURS = ("triton", "tuning")  # our served configurations: the main rows and the tuning ladder's steps


MIN_REQUESTS_PER_CALLER = 3  # fewer completed requests per caller than this and a row is too thin to compare


def enough_requests(row: dict) -> bool:
    """Whether every caller of a row completed a few requests in its window (in-process rows have one caller)."""
    callers = 1 if row["family"] == "in-process" else row["concurrency"]
    return row["requests"] >= MIN_REQUESTS_PER_CALLER * callers


def _measured(rows: list[dict], predicate) -> list[dict]:
    return [r for r in rows if r["batch"] == 1 and r["requests"] > 0 and enough_requests(r) and predicate(r)]


def _best(rows: list[dict], predicate) -> dict | None:
    candidates = _measured(rows, predicate)
    return max(candidates, key=lambda r: r["throughput_rps"]) if candidates else None


def _not_evaluated(target: str, missing: str, problems: list[dict]) -> dict:
    why = next((p["reason"] for p in problems if p["config"].startswith(missing)), "not measured in this run")
    return {"target": target, "met": None, "numbers": f"not evaluated: {missing}: {why}"}


def evaluate_targets(rows: list[dict], concurrency: list[int], problems: list[dict] | None = None) -> list[dict]:
    problems = problems or []
    top = max(concurrency)
    out = []
    ours = _best(rows, lambda r: r["family"] in OURS and r["concurrency"] == top)

    target = f"best Triton configuration at concurrency {top} >= 1.2x Infinity's throughput, p99 <= Infinity's"
    infinity = _best(rows, lambda r: r["config"] == "infinity" and r["concurrency"] == top)
    if ours and infinity:
        ratio = ours["throughput_rps"] / max(infinity["throughput_rps"], 1e-9)
        out.append({"target": target, "met": ratio >= 1.2 and ours["p99_ms"] <= infinity["p99_ms"],
                    "numbers": f"{ours['config']} {ours['throughput_rps']:.0f} vs {infinity['throughput_rps']:.0f} "
                               f"sentences/s = {ratio:.2f}x; p99 {ours['p99_ms']:.1f} vs {infinity['p99_ms']:.1f} ms"})
    else:
        out.append(_not_evaluated(target, "triton" if not ours else "infinity", problems))

    target = f"best Triton configuration at concurrency {top} >= 5x FastAPI + sentence-transformers, p99 <= 1/4 of its"
    baseline = _best(rows, lambda r: r["config"] == "fastapi-sentence-transformers" and r["concurrency"] == top)
    if ours and baseline:
        ratio = ours["throughput_rps"] / max(baseline["throughput_rps"], 1e-9)
        p99_ratio = ours["p99_ms"] / baseline["p99_ms"]
        out.append({"target": target, "met": ratio >= 5 and p99_ratio <= 0.25,
                    "numbers": f"{ours['config']} {ours['throughput_rps']:.0f} vs {baseline['throughput_rps']:.0f} "
                               f"sentences/s = {ratio:.2f}x; p99 {ours['p99_ms']:.1f} vs {baseline['p99_ms']:.1f} ms = "
                               f"{p99_ratio:.2f}x"})
    else:
        out.append(_not_evaluated(target, "triton" if not ours else "fastapi-sentence-transformers", problems))

    target = "best Triton throughput >= 0.8x the in-process ONNX Runtime limit of the same precision (ideal batching)"
    pairs = []
    for precision in ("fp32", "int8"):
        served = _best(rows, lambda r, p=precision: r["family"] in OURS and r.get("precision") == p)
        limit = _best(rows, lambda r, p=precision: r["config"] == f"onnxruntime-{p}")
        if served and limit:
            pairs.append((served["throughput_rps"] / max(limit["throughput_rps"], 1e-9), served, limit))
    if pairs:
        ratio, served, limit = max(pairs, key=lambda p: p[0])
        out.append({"target": target, "met": ratio >= 0.8,
                    "numbers": f"{served['config']} c={served['concurrency']} {served['throughput_rps']:.0f} vs "
                               f"{limit['config']} c={limit['concurrency']} {limit['throughput_rps']:.0f} sentences/s "
                               f"= {ratio:.2f}x"})
    else:
        out.append(_not_evaluated(target, "triton" if not ours else "onnxruntime", problems))

    target = "at concurrency 1, raw text through Triton has p50 <= sentence-transformers encode of one sentence"
    text_c1 = _measured(rows, lambda r: r["family"] == "triton" and r["config"].startswith("triton-")
                        and "-text" in r["config"] and r["concurrency"] == 1)
    st_c1 = _measured(rows, lambda r: r["config"] == "sentence-transformers" and r["concurrency"] == 1)
    if text_c1 and st_c1:
        best = min(text_c1, key=lambda r: r["p50_ms"])
        out.append({"target": target, "met": best["p50_ms"] <= st_c1[0]["p50_ms"],
                    "numbers": f"{best['config']} p50 {best['p50_ms']:.2f} ms vs sentence-transformers "
                               f"{st_c1[0]['p50_ms']:.2f} ms"})
    else:
        out.append(_not_evaluated(target, "triton" if not text_c1 else "sentence-transformers", problems))
    return out


def target_line(t: dict) -> str:
    status = "NOT EVALUATED" if t["met"] is None else ("MET" if t["met"] else "MISSED")
    return f"{status} {t['target']}: {t['numbers']}"


def breakdown_lines(rows: list[dict]) -> list[str]:
    """Where the time goes inside Triton: per ensemble step, queue and compute per request, executed batch."""
    lines = ["| config | c | batch | step | queue ms | compute ms | avg executed batch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        side = r.get("server_side") or {}
        if r["family"] != "triton" or not side.get("requests"):
            continue
        steps = side.get("steps") or [{"model": r.get("model_variant") or "minilm", **side}]
        for step in steps:
            lines.append(f"| {r['config']} | {r['concurrency']} | {r['batch']} | {step['model']} | "
                         f"{step.get('queue_ms')} | {step.get('compute_infer_ms')} | {step.get('avg_batch_size')} |")
    return lines if len(lines) > 2 else []


def _plots(rows: list[dict], latencies: dict, results_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in rows if r["batch"] == 1 and r["requests"] > 0 and r["family"] != "tuning"]
    configs = sorted({r["config"] for r in single}, key=lambda c: (c.startswith("triton"), c))
    in_process = {r["config"] for r in single if r["family"] == "in-process"}
    paths = []
    for metric, ylabel, name, log in (("sentences_per_s", "sentences per second", "compare-minilm_throughput.png", False),
                                      ("p99_ms", "p99 latency (ms)", "compare-minilm_p99.png", True)):
        fig, ax = plt.subplots(figsize=(10, 6))
        for config in configs:
            points = sorted((r["concurrency"], r[metric]) for r in single if r["config"] == config and r[metric] is not None)
            if points:
                ax.plot(*zip(*points), "--" if config in in_process else "-", marker="o", label=config)
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("concurrency (single-sentence requests in flight; in-process: sentences per call)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"all-MiniLM-L6-v2: {ylabel} vs concurrency (dashed: in-process)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_dir / name, dpi=110)
        plt.close(fig)
        paths.append(results_dir / name)
    levels = sorted({c for (_, c, b) in latencies if b == 1})
    if levels:
        c_cdf = 16 if 16 in levels else levels[-1]
        fig, ax = plt.subplots(figsize=(10, 6))
        for config in configs:
            lat = latencies.get((config, c_cdf, 1))
            if lat:
                values = np.sort(np.asarray(lat))
                ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=config)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"all-MiniLM-L6-v2: latency CDF at concurrency {c_cdf}")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_dir / "compare-minilm_latency_cdf.png", dpi=110)
        plt.close(fig)
        paths.append(results_dir / "compare-minilm_latency_cdf.png")
    return paths


def int8_note(facts: dict) -> str:
    source = facts.get("int8_source")
    if source == "builders":
        return "the builders published an INT8 encoder beside FP32: its step is the last of the ladder."
    if source:
        return (f"the builders did not publish an INT8 encoder (it missed their agreement bound), and the in-process "
                f"INT8 graph ({source}) faced the same agreement check as every peer (its row, or why it stopped, is "
                "above).")
    return "the builders publish INT8 only when it passes their agreement bound (their build report has the figures)."


def _cell(value) -> str:
    return "" if value is None else str(value)


def write_outputs(rows: list[dict], latencies: dict, plan, machine: dict, problems: list[dict], facts: dict,
                  results_dir: Path, elapsed_s: float) -> dict:
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_dir / "compare-minilm.json", rows)
    targets = evaluate_targets(rows, plan.concurrency, problems)
    target_lines = [target_line(t) for t in targets]
    plots = _plots(rows, latencies, results_dir) if rows else []
    sentences = facts.get("sentences", {})
    md = ["# Serving all-MiniLM-L6-v2 side by side", "",
          f"{sentences.get('count')} real sentences (held-out support messages, and longer ones up to 256 tokens: "
          f"{sentences.get('min_tokens')}-{sentences.get('max_tokens')} tokens, mean {sentences.get('mean_tokens')}), "
          f"the same for every configuration; single-sentence requests at concurrency "
          f"{'/'.join(map(str, plan.concurrency))}, plus a batch mix of {plan.batch}-sentence requests (served: "
          f"{plan.batch_concurrency} in flight; in-process: calls of {plan.batch}); each point measured for at least "
          f"{plan.duration_s:g} s after at least {plan.warmup_s:g} s warm-up, stretched to {WINDOW_ROUNDS:g} request "
          f"times (warm-up: 1.5) of the configuration's rate so far, at most {plan.max_window_s:g} s (the window and "
          f"completed-request columns); load generator on the same machine"
          + (" (**--quick**: a smoke run, not a measurement)" if plan.quick else "") + f". Run took {elapsed_s:.0f} s.",
          "", "## Machine and versions", "",
          f"{machine['cpu_model']}, {machine['cpu_cores']} cores, {machine['memory_gib']} GiB, GPUs: "
          f"{', '.join(machine['gpus']) or 'none'}; Python {machine['python']}; "
          + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()), ""]
    if facts.get("infinity"):
        inf = facts["infinity"]
        md += [f"Infinity: `{inf['requirement']}` in its own virtual environment `{inf['venv']}` ("
               + (f"installed in {inf['install_s']:.0f} s; " if inf.get("install_s") else "")
               + ", ".join(f"{k} {v}" for k, v in inf["packages"].items()) + "); settings: "
               + ", ".join(f"{k} {v}" for k, v in inf["settings"].items()) + ", offline, all cores.", ""]
    if facts.get("served_precision"):
        md += [f"Triton's default minilm configuration serves the {facts['served_precision'].upper()} encoder; "
               "`-int8` rows use the builders' `cpu_int8` configuration.", ""]
    md += ["## Targets", ""] + [f"- {line}" for line in target_lines] + [""]
    if any(t["met"] is False for t in targets):
        md += ["Where the time goes for a missed target: the per-step Triton breakdown below (queue vs compute per "
               "request, and how many requests each encoder run merged), and the server / load-generator CPU columns "
               "(on 2 shared cores a saturated load generator or server shows there).", ""]
    if problems:
        md += ["## Not measured", ""] + [f"- **{p['config']}**: {p['reason']}" for p in problems] + [""]
    md += ["## Results", "",
           "Every configuration first embedded the same check sentences; its agreement with sentence-transformers "
           "(minimum cosine) is in the last column, and its timing counts only above 0.999 (INT8: 0.99).", "",
           f"Rows marked * completed fewer than {MIN_REQUESTS_PER_CALLER} requests per caller in their window: too thin "
           "to compare, and the targets ignore them.", "",
           "| config | protocol | c | batch | sentences/s | tokens/s | p50 ms | p95 ms | p99 ms | errors | requests | "
           "window s | server cores | load-gen cores | min cosine |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        check = r.get("check") or {}
        md.append(f"| {r['config']} | {r['protocol']} | {r['concurrency']} | {r['batch']} | {r['sentences_per_s']:.0f} | "
                  f"{r['tokens_per_s']:.0f} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | "
                  f"{r['requests']}{'' if enough_requests(r) else '*'} | {_cell(r.get('window_s'))} | "
                  f"{_cell(r['cpu_server_cores'])} | {_cell(r['cpu_loadgen_cores'])} | {_cell(check.get('min_cosine'))} |")
    breakdown = breakdown_lines(rows)
    if breakdown:
        md += ["", "## Where the time goes inside Triton", "",
               "Per request, from Triton's statistics over each measurement window (tokenizer and encoder steps of the "
               "ensemble; executed batch = requests the dynamic batcher merged into one run).", ""] + breakdown
    from benchmarks.compare_minilm_variants import ladder_table

    ladder = ladder_table(rows, max(plan.concurrency))
    if ladder:
        md += ["", "## What each tuning step bought (raw text over gRPC)", "",
               "The builders' MiniLM configuration changed one thing per step (benchmarks/compare_minilm_variants.py); "
               f"branches are alternatives to the defaults. Each cell is the median of {plan.ladder_rounds} interleaved "
               "round(s). INT8: " + int8_note(facts), ""] + ladder
    md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    errors = [r for r in rows if r["errors"]]
    if errors:
        md += ["", "## Errors", ""] + [f"- {r['config']} c={r['concurrency']}: {r['errors']} — "
                                       + "; ".join(f"{k['count']} × {k['error']}" for k in r["error_kinds"]) for r in errors]
    atomic_write_text(results_dir / "compare-minilm-report.md", "\n".join(md) + "\n")
    summary = {"targets": targets, "target_lines": target_lines, "not_measured": problems, "machine": machine,
               "facts": facts, "plan": {"concurrency": plan.concurrency, "duration_s": plan.duration_s,
                                        "warmup_s": plan.warmup_s, "max_window_s": plan.max_window_s, "batch": plan.batch, "quick": plan.quick,
                                        "configs": list(plan.groups)},
               "elapsed_s": round(elapsed_s, 1), "plots": [str(p) for p in plots]}
    atomic_write_json(results_dir / "compare-minilm-summary.json", summary)
    return summary
