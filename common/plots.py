"""One way to make and save the PNG plots every component writes: headless, atomic, and the figure closed.

Why one: saving was written seven ways and three of them were not atomic (an interrupted run left a truncated PNG
that a report then linked). :func:`pyplot` selects the headless Agg backend before pyplot is imported, so plotting
works on servers and in CI; :func:`save_png` renders into memory and replaces the file in one rename.
"""
from __future__ import annotations

import io
from pathlib import Path

from common.files import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110, **savefig_kwargs) -> Path:
    """Write ``fig`` to ``path`` atomically (parent folders created) and close it; returns the path."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig_kwargs)
    pyplot().close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
