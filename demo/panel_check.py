"""Do the demo's Prometheus panels agree with the load generator? The rate window, and the check that says so.

A recording rule's ``rate(...[1m])`` over a 20-second load test averages the load with 40 seconds of idle time and
shows a third of the real rate. The demo's Prometheus therefore records its rates over a window that fits the run
(:func:`rate_window_for`). After the load the demo compares the request-rate panel (the very series it draws) with
Locust over the same seconds: the panel's mean from one full rate window after Locust's first counted second to its
last one, against Locust's own request count over the seconds those windows cover. Both go to ``agreement.json`` beside the panels.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from common.files import atomic_write_json
from monitoring.prom_api import PrometheusAPI
from monitoring.slo import duration_seconds

PANEL_SERIES = 'model:inference_requests:rate{{model="{model}",source="triton"}}'  # the request-rate panel's series


def rate_window_for(load_duration_s: float, scrape_interval: str = "1s", longest: str = "1m") -> str:
    """Half the load's duration, but at least eight scrapes and at most the SLO file's window: short enough to leave a
    steady span inside the run, long enough that a late scrape on a busy machine (rate() extrapolates only half an
    interval past its outermost samples) does not bias the rate low."""
    scrape = duration_seconds(scrape_interval)
    seconds = min(max(load_duration_s / 2, 8 * scrape), duration_seconds(longest))
    return f"{int(round(seconds))}s"


def _locust_rate(counts: list[list[float]], start: float, end: float) -> float | None:
    inside = [(t, n) for t, n in counts if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def compare_with_locust(api: PrometheusAPI, model: str, rate_window: str, load: dict, out_dir: Path) -> dict:
    """The request-rate panel's steady state against Locust's requests/s; written to ``out_dir/agreement.json``."""
    counts = load.get("request_counts") or []
    result = {"model": model, "rate_window": rate_window, "locust_rps": None, "panel_rps": None, "ratio": None,
              "points": 0, "span": None}
    if counts:
        window = duration_seconds(rate_window)
        start, end = counts[0][0] + window + 1, counts[-1][0] - 1
        result["span"] = [start, end]
        # the panel's points at [start, end] are rates over windows reaching back to start - window: Locust's count
        # over that same stretch is the like-for-like figure
        locust = _locust_rate(counts, start - window, end)
        values = [v for s in api.query_range(PANEL_SERIES.format(model=model), start, end, 1.0)
                  for v in s.values if v == v] if end > start else []
        if locust and values:
            panel = statistics.fmean(values)
            result.update(locust_rps=round(locust, 2), panel_rps=round(panel, 2), points=len(values),
                          ratio=round(panel / locust, 3))
    atomic_write_json(out_dir / "agreement.json", result)
    return result


def describe(result: dict) -> str:
    if result["ratio"] is None:
        return (f"request-rate panel: no steady span to compare for {result['model']} (the load ran shorter than two "
                f"{result['rate_window']} rate windows)")
    return (f"request-rate panel ({result['rate_window']} window): {result['panel_rps']:.1f} req/s in steady state vs "
            f"Locust {result['locust_rps']:.1f} req/s over the same seconds (ratio {result['ratio']:.2f})")
