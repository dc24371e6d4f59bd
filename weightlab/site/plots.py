"""A sweep's plot: one metric over the grid, as a PNG (matplotlib, Agg).

Layout (:func:`arrange`): x is the first grid key; one line per value of the second key
(per combination of the second and any fourth or later keys); one panel (small multiple)
per value of the third key. The x axis is logarithmic when every x value is a positive
number and they span more than 10x (:func:`use_log_x`); non-numeric x values (e.g. init
names) are placed at equal steps in grid order. Unfinished runs, and runs without the
metric, leave a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weightlab.site.collect import RunInfo, SweepInfo

LOG_SPAN = 10.0  # x values spanning more than this factor are drawn on a log axis


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def use_log_x(xs: list[Any]) -> bool:
    """True when every x is a positive number and max/min exceeds :data:`LOG_SPAN`."""
    if not xs or not all(_is_number(x) and x > 0 for x in xs):
        return False
    return max(xs) / min(xs) > LOG_SPAN


@dataclass
class Panel:
    """One small multiple: ``title`` (the third key's value, or ``""``) and its lines,
    ``{label: [(x, y), ...]}`` in grid order of x."""

    title: str
    lines: dict[str, list[tuple[Any, float]]] = field(default_factory=dict)


def _label(keys: list[str], point: dict) -> str:
    return ", ".join(f"{k}={point.get(k)}" for k in keys)


def arrange(sweep: SweepInfo, runs: dict[str, RunInfo], metric: str) -> list[Panel]:
    """The points of ``metric`` over ``sweep``'s grid, as panels of lines (see the module
    docstring). ``runs`` maps run directory names to runs; missing runs are skipped."""
    keys = sweep.grid_keys
    if not keys:
        return []
    x_key = keys[0]
    panel_key = keys[2] if len(keys) > 2 else None
    line_keys = [keys[1]] + keys[3:] if len(keys) > 1 else []
    panels: dict[str, Panel] = {}
    if panel_key is not None:  # panels in grid order, even those with no finished run
        for v in sweep.spec["grid"][panel_key]:
            title = f"{panel_key}={v}"
            panels.setdefault(title, Panel(title))
    for entry in sweep.runs:
        point = entry.get("point", {})
        title = f"{panel_key}={point.get(panel_key)}" if panel_key is not None else ""
        panel = panels.setdefault(title, Panel(title))
        label = _label(line_keys, point) if line_keys else metric
        line = panel.lines.setdefault(label, [])
        run = runs.get(entry["run"])
        if run is None or metric not in run.metrics:
            continue
        line.append((point.get(x_key), float(run.metrics[metric])))
    order = {repr(v): i for i, v in enumerate(sweep.spec["grid"][x_key])}
    for panel in panels.values():
        for label in panel.lines:
            panel.lines[label].sort(key=lambda p: order.get(repr(p[0]), len(order)))
    return list(panels.values())


def sweep_png(sweep: SweepInfo, runs: dict[str, RunInfo], metric: str) -> bytes | None:
    """The plot of ``metric`` over ``sweep``'s grid as PNG bytes; None when no run of the
    sweep has the metric (or the sweep has no grid)."""
    panels = arrange(sweep, runs, metric)
    if not any(pts for p in panels for pts in p.lines.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from weightlab.recipes.base import figure_png

    x_key = sweep.grid_keys[0]
    grid_x = list(sweep.spec["grid"][x_key])
    numeric = all(_is_number(x) for x in grid_x)
    log = use_log_x(grid_x)
    pos = {repr(x): (x if numeric else i) for i, x in enumerate(grid_x)}
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.6, 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, pts in panel.lines.items():
            if pts:
                ax.plot([pos[repr(x)] for x, _ in pts], [y for _, y in pts], "o-", label=label)
        if log:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(grid_x)), [str(x) for x in grid_x])
        ax.set_xlabel(x_key)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(panel.lines) > 1 and any(panel.lines.values()):
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(f"sweep {sweep.id}: {metric}", fontsize=10)
    return figure_png(fig)
