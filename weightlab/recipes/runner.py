"""Run a recipe into its run directory, resuming finished work, and render the report."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from weightlab.errors import WeightlabError
from weightlab.recipes.registry import get_recipe
from weightlab.runs.rundir import RunDir, default_run_dir


def make_config(recipe_name: str, smoke: bool = False, **overrides: Any):
    """The recipe's config: defaults, then its smoke sizes (if ``smoke``), then ``overrides``.

    Validation happens here, before any file is written.
    """
    recipe = get_recipe(recipe_name)
    cfg = recipe.Config()
    if smoke:
        cfg = replace(cfg, **recipe.smoke)
    return replace(cfg, **overrides) if overrides else cfg


def run_recipe(
    recipe_name: str,
    cfg: Any = None,
    out: Path | None = None,
    root: Path = Path("runs"),
    progress: bool = False,
) -> tuple[Path, dict]:
    """Run (or resume) ``recipe_name`` with ``cfg``; return the run directory and summary."""
    from weightlab.report.render import render_report

    recipe = get_recipe(recipe_name)
    cfg = cfg if cfg is not None else recipe.Config()
    path = Path(out) if out is not None else default_run_dir(root, recipe.name, cfg)
    rd = RunDir(path, recipe.name, cfg).open()
    t0 = time.perf_counter()
    try:
        summary = recipe.run(cfg, rd, progress=progress)
    except WeightlabError:
        rd.discard_if_empty()
        raise
    rd.write_json("summary.json", summary)
    rd.write_json(
        "timing.json",
        {
            "wall_s": time.perf_counter() - t0,
            "note": "this invocation only; resumed work is not re-timed",
        },
    )
    render_report(path)
    return path, summary
