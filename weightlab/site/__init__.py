"""The static verdicts site: did each paper's claims hold here, with the numbers.

:func:`build_site` reads a root's run directories and sweep records
(:mod:`weightlab.site.collect`, never the catalog) and writes plain HTML pages
(:mod:`weightlab.site.pages`) with images as files next to them (the runs' report PNGs,
and one plot per sweep from :mod:`weightlab.site.plots`)::

    OUT/index.html              every registered recipe by family and row, verdicts
    OUT/runs/<run>.html         one page per run; OUT/runs/<run>/*.png its figures
    OUT/sweeps/<id>.html        one page per sweep; OUT/sweeps/<id>.png its plot
    OUT/.weightlab-site         marks the folder as a site (rebuilt in place)

No script and no external URL: the pages read the same with JavaScript off, from
``file://``. The site is written to a temporary folder beside ``OUT`` and swapped in, so
a rebuild replaces an old site whole and a failed build leaves the old one.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
from pathlib import Path

from weightlab.errors import ConfigError
from weightlab.site.collect import (
    RunInfo,
    SweepInfo,
    collect_runs,
    collect_sweeps,
    newest_default,
    newest_finished,
)

MARKER = ".weightlab-site"

__all__ = ["MARKER", "build_site", "check_out_dir"]


def check_out_dir(out_dir: Path, root: Path | None = None) -> None:
    """Raise a one-line :class:`ConfigError` unless ``out_dir`` may receive a site: it
    does not exist, is an empty folder, or holds a site (:data:`MARKER`); and it does not
    hold ``root``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"site folder {out_dir} is a file; choose a folder for the site")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise ConfigError(
            f"site folder {out_dir} is not empty and holds no weightlab site "
            f"(no {MARKER}); choose a new or empty folder"
        )
    if root is not None:
        o, r = out_dir.resolve(), Path(root).resolve()
        if r == o or o in r.parents:
            raise ConfigError(
                f"site folder {out_dir} holds the runs root {root}; choose a folder outside it"
            )


def _machine() -> dict[str, str]:
    import torch

    return {
        "built": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.platform(),
        "CPUs": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _default_metric(sweep: SweepInfo, runs: dict[str, RunInfo]) -> str | None:
    for e in sweep.runs:
        r = runs.get(e["run"])
        if r is not None and r.done and r.metrics:
            return next(iter(r.metrics))
    return None


def _check_metric(metric: str, sweeps: list[SweepInfo], runs: dict[str, RunInfo]) -> None:
    names: list[str] = []
    for s in sweeps:
        for e in s.runs:
            r = runs.get(e["run"])
            if r is not None:
                names += [m for m in r.metrics if m not in names]
    if names and metric not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(
            f"--metric {metric!r} is in no finished sweep run; choose one of: {shown}"
        )


def build_site(
    out_dir: Path, root: Path, *, metric: str | None = None, smoke: bool = False
) -> Path:
    """Write the verdicts site for the runs under ``root`` into ``out_dir``; return the
    path of its ``index.html``.

    ``metric``: the metric the sweep plots show (default: per sweep, the first metric of
    its first finished run). ``smoke``: the runs used smoke sizes, so the index shows no
    verdicts ("smoke runs: no verdicts"); run pages still show what each run found.
    User errors (``out_dir`` a file, a non-empty folder that is no site, a missing root,
    an unknown ``metric``) raise a one-line :class:`ConfigError` before anything is
    written."""
    out_dir, root = Path(out_dir), Path(root)
    check_out_dir(out_dir, root)
    if not root.is_dir():
        raise ConfigError(f"runs root {root} is not a folder; pass --root with your runs folder")
    runs, problems = collect_runs(root)
    sweeps, sweep_problems = collect_sweeps(root)
    problems += sweep_problems
    by_name = {r.name: r for r in runs}
    if metric is not None:
        _check_metric(metric, sweeps, by_name)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write(tmp, runs, sweeps, problems, metric, smoke)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap(tmp, out_dir)
    return out_dir / "index.html"


def _swap(tmp: Path, out_dir: Path) -> None:
    """Put the finished site ``tmp`` at ``out_dir``, replacing an old site there."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
        else:
            out_dir.rmdir()
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(
    site: Path,
    runs: list[RunInfo],
    sweeps: list[SweepInfo],
    problems: list[str],
    metric: str | None,
    smoke: bool,
) -> None:
    from weightlab.progress import progress_bar
    from weightlab.recipes.registry import all_recipes, recipes_by_family
    from weightlab.runs.files import atomic_write_bytes, atomic_write_text
    from weightlab.site import pages, plots

    (site / "runs").mkdir(parents=True)
    (site / "sweeps").mkdir()
    registered = all_recipes()
    families = recipes_by_family()
    by_name = {r.name: r for r in runs}
    runs_by_recipe: dict[str, list[RunInfo]] = {}
    for r in sorted(runs, key=lambda r: (-r.mtime, r.name)):
        runs_by_recipe.setdefault(r.recipe, []).append(r)
    sweep_ids = {s.id for s in sweeps}

    bar = progress_bar(len(runs) + len(sweeps), "site", "page", enabled=len(runs) > 50)
    for run in runs:
        cls = registered.get(run.recipe)
        tables, why = [], None
        if cls is not None and run.done:
            try:
                tables = cls().tables(run.summary)
            except Exception as e:  # an old or odd summary: the page says so, the site goes on
                why = f"{type(e).__name__}: {e}"
        figures = []
        if run.pngs:
            (site / "runs" / run.name).mkdir()
            for p in run.pngs:
                shutil.copyfile(p, site / "runs" / run.name / p.name)
                figures.append(p.name)
        html = pages.run_html(run, cls, tables, why, figures, sweep_ids, set(by_name))
        atomic_write_text(site / "runs" / f"{run.name}.html", html)
        if bar is not None:
            bar.update()
    for s in sweeps:
        m = metric if metric is not None else _default_metric(s, by_name)
        png = plots.sweep_png(s, by_name, m) if m is not None else None
        plot = None
        if png is not None:
            plot = f"{s.id}.png"
            atomic_write_bytes(site / "sweeps" / plot, png)
        atomic_write_text(site / "sweeps" / f"{s.id}.html", pages.sweep_html(s, by_name, m, plot))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()

    mains: dict[str, RunInfo | None] = {}
    counts = dict.fromkeys(pages.VERDICT_CLASS, 0)
    for name, rs in runs_by_recipe.items():
        mains[name] = newest_finished(rs) if smoke else newest_default(rs)
    for cs in families.values():
        for cls in cs:
            main = mains.get(cls.name)
            if main is None:
                counts[pages.NO_RUN] += 1
            for c in main.claims() if main is not None else []:
                counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    index = pages.index_html(
        families, runs_by_recipe, mains, sweeps, problems, _machine(), counts, smoke
    )
    atomic_write_text(site / "index.html", index)
    atomic_write_text(site / MARKER, "a weightlab verdicts site (weightlab site OUT_DIR)\n")
