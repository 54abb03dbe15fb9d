"""YAML output that people can review: keys in the order written, multi-line PromQL as ``|`` blocks, a header line.

Generated files are committed and diffed in review, so their text must be stable (same input, same bytes) and
readable; PyYAML's defaults (sorted keys, quoted one-line strings with ``\\n``) are neither.
"""
from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value.rstrip("\n") + "\n", style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def dump(data: Any, header: str | None = None) -> str:
    """YAML text of ``data``; ``header`` becomes leading ``#`` comment lines."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)
    if not header:
        return body
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + body
