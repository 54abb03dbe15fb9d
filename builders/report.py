"""What a person reads and looks at after a build: a compact summary and ``report.png``.

The JSON report (``BUILD_DIR/report.json``) holds every number; :func:`summary_lines` picks the ones that decide
(parity, sizes, the INT8 decision, the gate, the published version) and :func:`plot_report` draws file size, latency,
held-out accuracy (candidate, INT8, serving version) and the parity errors against their tolerances.
"""
from __future__ import annotations

from pathlib import Path
from common.plots import save_png


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int8 = report.get("int8") or {}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    names, sizes, lat = ["FP32"], [report["onnx"]["size_bytes"] / 1e6], [int8.get("fp32_latency", {}).get("p50_ms", 0)]
    accs = {"FP32": report["accuracy"]} if report.get("accuracy") is not None else {}
    metric = (report.get("quality") or {}).get("name") or "accuracy"
    if int8:
        names.append("INT8" + ("" if int8["accepted"] else " (refused)"))
        sizes.append(int8["int8_size_bytes"] / 1e6)
        lat.append(int8["int8_latency"]["p50_ms"])
        if int8.get("int8_accuracy") is not None:
            accs[names[-1]] = int8["int8_accuracy"]
    baseline = (report.get("gate") or {}).get("baseline")
    if baseline and baseline.get("accuracy") is not None:
        accs[f"serving v{baseline['version']}"] = baseline["accuracy"]
    axes[0].bar(names, sizes, color=["#4c72b0", "#dd8452"][:len(names)])
    axes[0].set_title("ONNX file size (MB)")
    if int8:
        axes[1].bar(names, lat, color=["#4c72b0", "#dd8452"][:len(names)])
        axes[1].set_title(f"ORT latency p50 (ms), batch {int8['fp32_latency']['batch_size']}")
    else:
        axes[1].text(0.5, 0.5, "INT8 not built", ha="center", va="center")
        axes[1].set_axis_off()
    if accs:
        axes[2].bar(list(accs), list(accs.values()), color="#55a868")
        axes[2].set_ylim(max(0.0, min(accs.values()) - 0.05), 1.0)
        axes[2].set_title(f"held-out {metric}")
    else:
        axes[2].text(0.5, 0.5, "accuracy gating off\n(no labelled held-out data)", ha="center", va="center")
        axes[2].set_axis_off()
    outputs = report["parity"]["outputs"]
    axes[3].bar([o["name"] for o in outputs], [max(o["max_abs_error"], 1e-12) for o in outputs], color="#8172b2")
    for i, o in enumerate(outputs):
        axes[3].plot([i - 0.4, i + 0.4], [o["atol"], o["atol"]], color="red", linestyle="--")
    axes[3].set_yscale("log")
    axes[3].set_title("max |ONNX - PyTorch| (red: atol)")
    fig.suptitle(f"{report['model']}: build {report['build_id']}")
    fig.tight_layout()
    save_png(fig, path, dpi=90)


def summary_lines(report: dict) -> list[str]:
    """The compact human summary printed after a build."""
    weights = (report.get("checkpoint", {}).get("weights_sha256") or "?")[:12]
    lines = [f"{report['model']}: built from {report.get('source', 'run-dir')} {report['run_dir']} (weights {weights})"]
    if report.get("unchanged"):
        lines.append(f"  unchanged: version {report['unchanged']['version']} in {report['unchanged']['model_dir']} already "
                     "serves these weights built with these settings; nothing published (--force rebuilds)")
        return lines
    if "onnx" in report:
        o, s = report["onnx"], report["simplify"]
        simp = (f"onnxslim {s['nodes_before']} → {s.get('nodes_after')} nodes" if s.get("kept")
                else f"not simplified ({s.get('reason', 'disabled')})")
        lines.append(f"  onnx      opset {o['opset']}, IR {o['ir_version']}, {o['size_bytes'] / 1e6:.2f} MB, {simp}")
    if "parity" in report:
        p = report["parity"]
        errs = ", ".join(f"{x['name']} max|Δ| {x['max_abs_error']:.1e} (atol {x['atol']:g})" for x in p["outputs"])
        head = f"  parity    {'PASS' if p['passed'] else 'FAIL'} vs {p.get('reference', 'PyTorch')} on {p['samples']} held-out samples: {errs}"
        if p.get("task") == "embedding":
            head += (f"; cosine min {p['min_cosine']:.6f} (>= {p['cosine_threshold']}), nearest-neighbour agreement "
                     f"{p['neighbour_agreement']:.2%}")
        elif p.get("task", "classification") == "classification":
            head += f"; argmax agreement {p['argmax_agreement']:.2%}"
        lines.append(head)
    if "accuracy" in report:
        if report["accuracy"] is None:
            lines.append(f"  accuracy  {report.get('accuracy_gating', 'accuracy gating is off')}")
        else:
            metric = (report.get("quality") or {}).get("name") or "accuracy"
            lines.append(f"  {metric:<9} {report['accuracy']:.4f} on the held-out data (ONNX Runtime, FP32)")
    for variant, ref in (report.get("reference") or {}).items():
        lines.append(f"  reference {variant} vs {ref['reference']} on {ref['samples']} texts: cosine min "
                     f"{ref['min_cosine']:.6f}, mean {ref['mean_cosine']:.6f} (threshold {ref['threshold']})")
    if report.get("int8"):
        q = report["int8"]
        ratio = q["fp32_size_bytes"] / max(q["int8_size_bytes"], 1)
        speed = q["fp32_latency"]["p50_ms"] / max(q["int8_latency"]["p50_ms"], 1e-9)
        quality = (f"{q.get('metric') or 'accuracy'} {q['int8_accuracy']:.4f} ({-q['accuracy_drop']:+.4f}, margin "
                   f"{q['max_accuracy_drop']})" if q.get("accuracy_drop") is not None else q["reason"])
        lines.append(f"  int8      {'accepted' if q['accepted'] else 'REFUSED'}: {q['int8_size_bytes'] / 1e6:.2f} MB "
                     f"({ratio:.1f}x smaller), {speed:.2f}x FP32 speed, {quality}")
    if "tensorrt" in report:
        t = report["tensorrt"]
        lines.append("  tensorrt  " + (f"skipped: {t['skipped']}" if "skipped" in t else
                                       f"{t['precision']} plan for {t['gpu_name']}, parity "
                                       f"{'PASS' if t['parity']['passed'] else 'FAIL'}"))
    if "gate" in report:
        g = report["gate"]
        b = g.get("baseline")
        against = ("no serving version yet" if not b else
                   f"serving v{b['version']} {b['accuracy']:.4f}" if b.get("accuracy") is not None else f"serving v{b['version']} (no accuracy)")
        if g.get("candidate_accuracy") is None:
            lines.append(f"  gate      {'PASS' if g['passed'] else 'FAIL'}: parity only (accuracy gating is off)")
        else:
            lines.append(f"  gate      {'PASS' if g['passed'] else 'FAIL'}: {g.get('metric') or 'accuracy'} "
                         f"{g['candidate_accuracy']:.4f} vs {against} (margin {g['max_accuracy_drop']})")
    if "published" in report:
        pub = report["published"]
        lines.append(f"  published {pub['path']} (previous: {pub['previous'] or 'none'}; members: "
                     f"{', '.join(report['package']['members'])})")
    rollout = report.get("rollout")
    if rollout and rollout.get("status") == "ok":
        lines.append(f"  rollout   Triton loaded version {report['published']['version']}")
    failed = [s for s in report.get("steps", []) if s["status"] == "failed"]
    for step in failed:
        lines.append(f"  FAILED    {step['name']}: {step['detail']}")
    lines.append(f"  report    {report['build_dir']}/report.json" + (" (+ report.png)" if report.get("plot") else ""))
    return lines
