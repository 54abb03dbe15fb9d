"""Small helpers for writing PromQL from Python without string-escaping bugs.

Only what the rule and panel generators need: quoting a label value, a regex that matches exactly a set of names, and
formatting a number so that the generated YAML stays readable (``0.25``, not ``0.25000000000000000``).
"""
from __future__ import annotations

import re
from typing import Iterable


def quote(value: str) -> str:
    """A PromQL double-quoted string literal holding ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exact_regex(names: Iterable[str]) -> str:
    """An RE2 regex (PromQL anchors it) matching exactly the given names, e.g. ``digits|text\\.clf``."""
    return "|".join(re.escape(name) for name in sorted(set(names)))


def number(value: float) -> str:
    """The shortest text that reads back as ``value`` (``1``, ``0.25``, ``1e-06``)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
