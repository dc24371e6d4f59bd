"""Run a recipe into its run directory, resuming finished work, and render the report.

Order of a run: the config is built and range-checked (:func:`make_config`); the task is
checked against the recipe's ``tasks``/``kinds`` and loaded; the recipe's ``validate``
hook checks what needs the data's sizes; only then is the run directory opened. So any
of these user errors leaves nothing on disk. An error found later, before any unit
finished, removes only what this process created.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from weightlab.errors import ConfigError, WeightlabError
from weightlab.recipes.registry import get_recipe
from weightlab.recipes.tasks import data_sizes
from weightlab.runs.rundir import RunDir, default_run_dir
from weightlab.runs.schema import expect_summary


def make_config(recipe_name: str, smoke: bool = False, broken: bool = False, **overrides: Any):
    """The recipe's config: defaults, then its smoke sizes (if ``smoke``), then (if
    ``broken``) one epoch and the recipe's ``broken`` overrides (a run that must not hold
    any claim), then ``overrides``. Range checks happen here, before any file is written."""
    recipe = get_recipe(recipe_name)
    cfg = recipe.Config()
    if smoke:
        cfg = replace(cfg, **recipe.smoke)
    if broken:
        if not recipe.trains:
            raise ConfigError(f"recipe {recipe.name!r} trains nothing, so it has no broken run")
        one_epoch = {"epochs": 1} if "epochs" in {f.name for f in fields(cfg)} else {}
        cfg = replace(cfg, **{**one_epoch, **recipe.broken})
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"recipe {recipe.name!r} has no option(s) {', '.join(unknown)}")
    return replace(cfg, **overrides) if overrides else cfg


def run_recipe(
    recipe_name: str,
    cfg: Any = None,
    out: Path | None = None,
    root: Path = Path("runs"),
    progress: bool = False,
    *,
    recipe: Any = None,
    on_open: Any = None,
) -> tuple[Path, dict]:
    """Run (or resume) ``recipe_name`` with ``cfg``; return the run directory and summary.

    ``timing.json`` records this invocation's wall time, the units it computed (empty on
    a re-run of a finished run) and the recipe's machine-dependent measurements
    (:meth:`~weightlab.recipes.base.Recipe.measurements`). ``recipe``: the instance to use
    (default a fresh one); ``on_open(rd)`` is called once the run directory is open (a
    sweep records the run's batch group and catalog row there)."""
    import torch

    from weightlab.catalog.records import versions
    from weightlab.report.render import render_report

    recipe = recipe if recipe is not None else get_recipe(recipe_name)
    cfg = cfg if cfg is not None else recipe.Config()
    recipe.validate(cfg, data_sizes(recipe.load_data(cfg)))
    path = Path(out) if out is not None else default_run_dir(root, recipe.name, cfg)
    rd = RunDir(path, recipe.name, cfg).open()
    if on_open is not None:
        on_open(rd)
    recipe._measurements = []
    t0 = time.perf_counter()
    # present while this process works on the run (the catalog and tests find its pid here)
    rd.write_json(
        "running.json",
        {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time()},
    )
    try:
        summary = recipe.run(cfg, rd, progress=progress)
    except WeightlabError:
        (path / "running.json").unlink(missing_ok=True)
        rd.discard_if_empty()
        raise
    except BaseException:
        (path / "running.json").unlink(missing_ok=True)
        raise
    summary = {**summary, "metrics": recipe.metrics(summary)}
    expect_summary(summary)  # a recipe bug, not a user error, if this fails
    rd.write_json("summary.json", summary)
    rd.write_json(
        "timing.json",
        {
            "wall_s": time.perf_counter() - t0,
            "computed_units": rd.computed,
            # where this invocation ran (the catalog's reindex reads them back)
            "host": socket.gethostname(),
            "threads": torch.get_num_threads(),
            "versions": versions(),
            "note": "this invocation only; resumed work is not re-timed",
            "measurements": [
                {"title": t, "header": list(h), "rows": [list(r) for r in rows]}
                for t, h, rows in recipe.measurements()
            ],
        },
    )
    render_report(path)
    (path / "running.json").unlink(missing_ok=True)
    return path, summary
