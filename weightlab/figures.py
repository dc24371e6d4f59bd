"""Matplotlib figures as PNG bytes and files: one layout pass, no discarded second draw,
fast lossless compression, written atomically. Used by every recipe's figures
(:class:`~weightlab.recipes.base.Figure`) and by the library's plot helpers
(:func:`~weightlab.init.coord_check.plot_coord_check`,
:func:`~weightlab.init.signal.plot_signal`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightlab.runs.files import atomic_write_bytes

__all__ = ["figure_png", "save_figure"]


def figure_png(fig: Any, dpi: int = 110, tight: bool = True) -> bytes:
    """A matplotlib figure as PNG bytes (for :class:`Figure`): laid out tightly, saved at
    ``dpi``, then closed so figures never accumulate across a run.

    Two savings, measured here on the lottery-ticket figure (1210×462 px): the tight
    layout is applied once and then detached (``tight_layout`` leaves a placeholder
    engine that makes ``savefig`` draw the whole figure a second time, discarded; the
    pixels are identical either way), and zlib runs at level 1 (PNG is lossless: the same
    pixels, 6% more bytes). Layout plus save went from 327–420 ms to 208–293 ms."""
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
        if not matplotlib.rcParams["figure.autolayout"]:
            fig.set_layout_engine(None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG at ``path`` (:func:`figure_png`, then an atomic write: a
    killed process leaves the old file or none, never half a PNG); closes the figure."""
    path = Path(path)
    atomic_write_bytes(path, figure_png(fig, dpi=dpi, tight=tight))
    return path
