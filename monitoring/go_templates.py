"""Python twins of the Prometheus template functions our alert annotations use.

promtool compares the rendered annotations of a firing alert character for character, so the generated unit tests
must know what Prometheus will print. These follow ``humanizeDuration`` and ``humanizePercentage`` of Prometheus 2.x
(``template/template.go``); Go's ``%.4g`` and Python's ``%.4g`` agree for finite numbers.
"""
from __future__ import annotations

import math


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return "%.4g" % v
    if v == 0:
        return "%.4gs" % v
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        seconds = int(v)
        days, seconds = divmod(seconds, 86400)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return "%s%.4gs" % (sign, v)
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return "%.4g%ss" % (v, prefix)


def humanize_percentage(v: float) -> str:
    return "%.4g%%" % (v * 100)
