"""PNG panels for people without Grafana: the main dashboard panels drawn with matplotlib from Prometheus ranges.

``python -m monitoring panels --prometheus http://127.0.0.1:9090 --last 10m --out DIR`` writes one PNG per panel,
``overview.png`` with all of them, and ``panels.json`` (which panels had data, and why the others had none). The
queries, legends, units and threshold lines are the dashboards' own (:mod:`monitoring.panels`), so the images show
what Grafana would. A panel without data says "no data" in the image together with the scrape jobs that feed it and
any of their targets Prometheus reports down; a Prometheus that is down is one clear error, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from common import cli
from common.errors import UserError
from common.files import atomic_write_json
from common.plots import save_png
from monitoring.dashboards import no_data_text
from monitoring.panels import ALL_MODELS, Panel, dashboards, main_panels, threshold_text
from monitoring.prom_api import PrometheusAPI, QueryError, Series, TargetHealth, describe_down, finite
from monitoring.slo import DEFAULT_SLO_FILE, duration_seconds, load_slo

MAX_POINTS = 400
_LEGEND_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class PanelData:
    panel: Panel
    series: list[tuple[int, Series]] = field(default_factory=list)    # (query index, series)
    errors: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return any(finite(s) for i, s in self.series if not self.panel.queries[i].slo_line)

    def models(self) -> list[str]:
        return sorted({s.labels.get("model", "") for i, s in self.series
                       if not self.panel.queries[i].slo_line and finite(s)} - {""})


@dataclass
class PanelResult:
    key: str
    title: str
    file: str
    series: int
    models: list[str]
    no_data_reason: str | None
    query_errors: list[str]


def _pyplot():
    """matplotlib with the file-only Agg backend, imported on first drawing (keeps the other commands quick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def legend(fmt: str, labels: dict[str, str]) -> str:
    return _LEGEND_FIELD.sub(lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def fetch(api: PrometheusAPI, panel: Panel, start: float, end: float, step_s: float) -> PanelData:
    data = PanelData(panel)
    for index, expr in enumerate(panel.exprs(ALL_MODELS)):
        try:
            data.series += [(index, s) for s in api.query_range(expr, start, end, step_s)]
        except QueryError as exc:
            data.errors.append(str(exc))
    return data


def _formatter(unit: str):
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    if unit == "percentunit":
        return PercentFormatter(1.0)

    def seconds(v: float, _pos: int) -> str:
        if v == 0:
            return "0"
        if abs(v) < 1e-3:
            return f"{v * 1e6:g} µs"
        if abs(v) < 1:
            return f"{v * 1e3:g} ms"
        return f"{v:g} s"

    suffix = {"reqps": " req/s", "watt": " W", "celsius": " °C", "bytes": " B"}.get(unit, "")
    if unit == "s":
        return FuncFormatter(seconds)
    return FuncFormatter(lambda v, _pos: f"{v:g}{suffix}")


def _no_data_reason(data: PanelData, down: dict[str, list[str]]) -> str:
    problems = [line for job in data.panel.jobs for line in down.get(job, [])]
    reason = no_data_text(data.panel)
    if problems:
        reason += "\n" + "\n".join(problems)
    if data.errors:
        reason += "\nquery failed: " + "; ".join(data.errors)
    return reason


def draw(ax, data: PanelData, model: str | None, down: dict[str, list[str]], start: float, end: float) -> None:
    """Draw one panel (or one model's share of a per-model panel) into ``ax``, on the common time axis."""
    import matplotlib.dates as mdates

    panel = data.panel
    title = panel.title + (f": {model}" if model else "")
    ax.set_title(title, fontsize=10, loc="left")
    drawn = 0
    for index, s in data.series:
        if model is not None and s.labels.get("model") != model:
            continue
        query = panel.queries[index]
        if not finite(s):
            continue
        times = [datetime.fromtimestamp(t) for t in s.times]
        values = [v if math.isfinite(v) else float("nan") for v in s.values]
        if query.slo_line:
            ax.plot(times, values, linestyle="--", color="red", linewidth=1.2, label=legend(query.legend, s.labels))
        else:
            ax.plot(times, values, linewidth=1.2, label=legend(query.legend, s.labels))
            drawn += 1
    if drawn == 0:
        lines = [textwrap.fill(line, 90) for line in _no_data_reason(data, down).splitlines()]
        ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=7, color="dimgray",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.threshold is not None:
        ax.axhline(panel.threshold.value, linestyle="--", color="red", linewidth=1,
                   label=threshold_text(panel.threshold, panel.unit))
    ax.yaxis.set_major_formatter(_formatter(panel.unit))
    ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    if panel.log_scale:
        from matplotlib.ticker import LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(_formatter(panel.unit))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", ncol=2)


def _cells(data: PanelData) -> list[str | None]:
    return (data.models() or [None]) if data.panel.per_model else [None]


def _save(fig, path: Path) -> None:
    save_png(fig, path, bbox_inches="tight")


def render_panels(api: PrometheusAPI, panels: list[Panel], start: float, end: float, out_dir: Path,
                  step_s: float | None = None, expected_jobs: Sequence[str] = ()) -> list[PanelResult]:
    """Fetch and draw every panel; write ``<key>.png``, ``overview.png`` and ``panels.json`` under ``out_dir``."""
    if end <= start:
        raise UserError(f"the time range is empty: start {start:.0f} is not before end {end:.0f}")
    step_s = step_s or max(1.0, math.ceil((end - start) / MAX_POINTS))
    targets: list[TargetHealth] = api.targets()
    down: dict[str, list[str]] = {}
    for line, job in _problems_by_job(targets, expected_jobs):
        down.setdefault(job, []).append(line)
    all_data = [fetch(api, panel, start, end, step_s) for panel in panels]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for data in all_data:
        cells = _cells(data)
        fig, axes = _pyplot().subplots(len(cells), 1, figsize=(8, 3.2 * len(cells)), squeeze=False)
        for ax, model in zip(axes[:, 0], cells):
            draw(ax, data, model, down, start, end)
        fig.autofmt_xdate()
        name = f"{data.panel.key}.png"
        _save(fig, out_dir / name)
        results.append(PanelResult(
            key=data.panel.key, title=data.panel.title, file=name,
            series=sum(1 for i, s in data.series if finite(s) and not data.panel.queries[i].slo_line),
            models=data.models(), no_data_reason=None if data.has_data else _no_data_reason(data, down),
            query_errors=data.errors))
    _overview(all_data, down, out_dir / "overview.png", start, end)
    atomic_write_json(out_dir / "panels.json", {
        "prometheus": api.url, "start": start, "end": end, "step_s": step_s,
        "targets_down": [line for lines in down.values() for line in lines],
        "panels": [asdict(r) for r in results],
    })
    return results


def _problems_by_job(targets: list[TargetHealth], expected_jobs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for t in targets:
        for line in describe_down([t]):
            out.append((line, t.job))
    seen = {t.job for t in targets}
    for job in expected_jobs:
        if job not in seen:
            out.append((describe_down([], [job])[0], job))
    return out


def _overview(all_data: list[PanelData], down: dict[str, list[str]], path: Path, start: float, end: float) -> None:
    cells = [(data, model) for data in all_data for model in _cells(data)]
    columns = 2
    rows = math.ceil(len(cells) / columns)
    fig, axes = _pyplot().subplots(rows, columns, figsize=(8 * columns, 3.2 * rows), squeeze=False)
    for ax, (data, model) in zip(axes.flat, cells):
        draw(ax, data, model, down, start, end)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    span = f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M:%S} to {datetime.fromtimestamp(end):%H:%M:%S}"
    fig.suptitle(f"Inference platform: main panels, {span}", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    _save(fig, path)


def parse_time(text: str) -> float:
    """Unix seconds or an ISO 8601 date-time (local time when it has no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UserError(f"time {text!r} is neither Unix seconds nor ISO 8601 (e.g. 2025-01-31T14:05:00)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="Prometheus base URL (default http://127.0.0.1:9090)")
    parser.add_argument("--last", help="render the last DURATION up to now, e.g. 5m or 1h (default 15m when "
                        "--start is not given)")
    parser.add_argument("--start", help="range start: Unix seconds or ISO 8601 (use with --end)")
    parser.add_argument("--end", help="range end: Unix seconds or ISO 8601 (default: now)")
    parser.add_argument("--step", type=float, help=f"seconds between points (default: range / {MAX_POINTS}, >= 1)")
    parser.add_argument("--out", required=True, help="directory for the PNG files, overview.png and panels.json")
    parser.add_argument("--all", action="store_true", help="render every dashboard panel, not only the main ones")
    parser.add_argument("--slo", default=str(DEFAULT_SLO_FILE), help="SLO file for the threshold lines "
                        "(default monitoring/slo.toml)")
    parser.add_argument("--expect", action="append", default=[], metavar="JOB",
                        help="a scrape job that must exist (e.g. triton); reported by name when Prometheus has no "
                             "target for it (repeatable)")


def time_range(args: argparse.Namespace) -> tuple[float, float]:
    if args.last and args.start:
        raise UserError("give either --last or --start/--end, not both")
    end = parse_time(args.end) if args.end else time.time()
    if args.start:
        return parse_time(args.start), end
    try:
        span = duration_seconds(args.last or "15m")
    except ValueError as exc:
        raise UserError(f"--last: {exc}") from None
    return end - span, end


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = cli.command_args("python -m monitoring panels", __doc__, add_arguments, argv, args)
    slo = load_slo(args.slo)
    start, end = time_range(args)
    if end <= start:
        raise UserError(f"the range ends ({end:.0f}) before it starts ({start:.0f}): expected --start before --end")
    if args.step is not None and not args.step > 0:
        raise UserError(f"--step {args.step:g}: expected a positive number of seconds")
    panels = [p for d in dashboards(slo) for p in d.panels] if args.all else main_panels(slo)
    api = PrometheusAPI(args.prometheus)
    out = Path(args.out)
    results = render_panels(api, panels, start, end, out, args.step, args.expect)
    if results and all(r.query_errors for r in results):  # a wrong range or step, not a quiet system
        raise UserError(f"every query failed (PNGs in {out} show why); the first: {results[0].query_errors[0]}")
    summary = json.loads((out / "panels.json").read_text())
    for line in summary["targets_down"]:
        print(f"warning: {line}", flush=True)
    for r in results:
        state = f"{r.series} series" if r.no_data_reason is None else "no data"
        print(f"  {r.key:<24} {state:<12} {out / r.file}", flush=True)
        for error in r.query_errors:
            print(f"    query error: {error}", flush=True)
    print(f"overview: {out / 'overview.png'}", flush=True)
    return 0
