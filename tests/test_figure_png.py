"""figure_png: one tight layout, no second draw, zlib level 1; same pixels as matplotlib's
plain tight_layout + savefig."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from weightlab.recipes.base import figure_png  # noqa: E402


def _figure():
    fig, axes = plt.subplots(1, 2, figsize=(6, 2.5))
    x = np.linspace(1, 100, 12)
    for ax in axes:
        ax.plot(x, np.sqrt(x), "o-", ms=3, label="a long legend label")
        ax.fill_between(x, np.sqrt(x) - 1, np.sqrt(x) + 1, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend()
    fig.suptitle("a suptitle that tight_layout must leave room for")
    return fig


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_same_pixels_as_plain_tight_savefig_and_figure_closed():
    fig = _figure()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    want = _pixels(buf.getvalue())

    fig = _figure()
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(_pixels(png), want)
    assert fig.get_layout_engine() is None  # the layout was applied once, then detached
    assert not plt.fignum_exists(fig.number)
    assert figure_png(_figure()) == png  # deterministic bytes


def test_without_tight_keeps_the_figures_own_layout_engine():
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([1, 2, 3])
    png = figure_png(fig, tight=False)
    assert _pixels(png).shape[2] == 4
    assert fig.get_layout_engine() is not None  # constrained layout left in charge


def test_save_figure_writes_atomically_the_same_bytes(tmp_path, monkeypatch):
    from weightlab import figures
    from weightlab.figures import save_figure

    path = save_figure(_figure(), tmp_path / "sub" / "f.png")
    assert path.read_bytes() == figure_png(_figure())
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]  # no temp file left
    # a failure while encoding leaves the old file as it was
    before = path.read_bytes()

    def broken(fig, dpi=110, tight=True):
        plt.close(fig)
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(figures, "figure_png", broken)
    with pytest.raises(RuntimeError, match="encoder failed"):
        save_figure(_figure(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]


def test_coord_check_plot_goes_through_save_figure(tmp_path, monkeypatch):
    from weightlab import figures
    from weightlab.init.coord_check import CoordCheck, plot_coord_check

    calls = []
    real = figures.save_figure

    def spy(fig, path, dpi=110, tight=True):
        calls.append((str(path), dpi, tight))
        return real(fig, path, dpi=dpi, tight=tight)

    monkeypatch.setattr(figures, "save_figure", spy)

    widths, names = [8, 16, 32], ["h0", "h1"]
    scale = {w: [{"h0": 1.0 * w, "h1": 2.0 / w}, {"h0": 1.5 * w, "h1": 1.0}] for w in widths}
    slopes = [{"h0": 1.0, "h1": -1.0}, {"h0": 1.0, "h1": 0.0}]
    out = tmp_path / "cc.png"
    plot_coord_check(CoordCheck(widths, names, scale, slopes), str(out), "coord check")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pixels(out.read_bytes()).shape[:2] == (286, 572)  # 2 panels of 2.6 in at 110 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cc.png"]
    assert calls == [(str(out), 110, True)]
