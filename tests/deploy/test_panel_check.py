"""The demo's rate window fits its run, and Locust's rate is read over exactly the span the panel is compared on."""
from __future__ import annotations

from demo.panel_check import _locust_rate, rate_window_for


def test_rate_window_fits_the_run_between_four_scrapes_and_the_slo_window():
    assert rate_window_for(20) == "10s"
    assert rate_window_for(6) == "8s"          # eight 1 s scrapes at least
    assert rate_window_for(3600) == "60s"      # never longer than the SLO file's 1m
    assert rate_window_for(20, scrape_interval="3s") == "24s"


def test_locust_rate_is_counted_over_the_span_only():
    counts = [[100, 50], [101, 150], [102, 350], [103, 550], [104, 750], [105, 800]]
    assert _locust_rate(counts, 102, 104) == 200.0
    assert _locust_rate(counts, 104, 104) is None
    assert _locust_rate([], 0, 10) is None
