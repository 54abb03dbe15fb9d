"""PNG plots are written whole or not at all, and the figure is closed."""
from __future__ import annotations

import pytest

from common.plots import pyplot, save_png


def test_save_png_writes_a_png_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no temporary file left


def test_a_failed_render_leaves_the_previous_png(tmp_path):
    plt = pyplot()
    path = tmp_path / "plot.png"
    path.write_bytes(b"previous")
    fig, _ = plt.subplots()
    with pytest.raises(TypeError):
        save_png(fig, path, format_does_not_exist=True)  # the renderer fails before anything is written
    assert path.read_bytes() == b"previous"
