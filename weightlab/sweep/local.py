"""The local executor: one process, one OS thread, batch groups one after another.

A group of one run is an ordinary :func:`~weightlab.recipes.runner.run_recipe`. A larger
group's runs proceed side by side as greenlets (:mod:`weightlab.sweep.batching`), their
``train_members`` calls trained as shared populations. A group whose runs all hold a
``summary.json`` is finished and skipped; otherwise the whole group runs again, reusing
only the units every run of the group holds.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightlab.errors import WeightlabError
from weightlab.recipes.registry import get_recipe
from weightlab.recipes.runner import run_recipe
from weightlab.runs.files import atomic_write_json
from weightlab.sweep.plan import Plan, PlannedRun


@dataclass
class RunOutcome:
    """How one run of a sweep ended (what a Ray task returns to the driver, too)."""

    run: str  # run directory name
    status: str  # done, failed, skipped (already done)
    error: str | None = None
    wall_s: float = 0.0
    verdicts: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "run": self.run,
            "status": self.status,
            "error": self.error,
            "wall_s": self.wall_s,
            "verdicts": [list(v) for v in self.verdicts],
        }

    @classmethod
    def from_json(cls, d: dict) -> RunOutcome:
        return cls(
            d["run"],
            d["status"],
            d.get("error"),
            float(d.get("wall_s", 0.0)),
            [tuple(v) for v in d.get("verdicts", [])],
        )


def run_done(path: Path) -> bool:
    return (Path(path) / "summary.json").exists()


def group_done(plan: Plan, gid: str) -> bool:
    idx = dict(plan.groups)[gid]
    return all(run_done(plan.runs[i].path) for i in idx)


def _batch_record(plan: Plan, gid: str) -> dict:
    idx = dict(plan.groups)[gid]
    return {"sweep": plan.spec.id, "group": gid, "group_runs": [plan.runs[i].name for i in idx]}


def run_group(
    plan: Plan,
    gid: str,
    *,
    on_start: Callable[[PlannedRun], None] | None = None,
    on_end: Callable[[PlannedRun, RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run (or resume) batch group ``gid`` of ``plan`` in this process; never raises for a
    run's own failure (it becomes that run's ``failed`` outcome)."""
    from weightlab.sweep.batching import GroupBatcher

    idx = dict(plan.groups)[gid]
    runs = [plan.runs[i] for i in idx]
    if all(run_done(r.path) for r in runs):
        return [RunOutcome(r.name, "skipped", verdicts=_verdicts(r.path)) for r in runs]
    record = _batch_record(plan, gid)
    shared_data: dict = {}

    def job(r: PlannedRun) -> Callable[[], RunOutcome]:
        def go() -> RunOutcome:
            t0 = time.perf_counter()
            recipe = get_recipe(plan.spec.recipe)
            recipe._data_cache = shared_data  # one task object for the group's calls

            def opened(rd) -> None:
                atomic_write_json(rd.path / "batch.json", record)
                if on_start is not None:
                    on_start(r)

            try:
                _, summary = run_recipe(
                    plan.spec.recipe,
                    r.cfg,
                    out=r.path,
                    progress=False,
                    recipe=recipe,
                    on_open=opened,
                )
                out = RunOutcome(
                    r.name,
                    "done",
                    wall_s=time.perf_counter() - t0,
                    verdicts=[(c["id"], c["verdict"]) for c in summary["claims"]],
                )
            except WeightlabError as e:
                out = RunOutcome(r.name, "failed", str(e), time.perf_counter() - t0)
            except Exception as e:  # a recipe bug: the sweep goes on, the run is marked failed
                tb = traceback.format_exc(limit=-3).strip().splitlines()
                where = tb[-3].strip() if len(tb) >= 3 else ""
                out = RunOutcome(
                    r.name, "failed", f"{type(e).__name__}: {e} ({where})", time.perf_counter() - t0
                )
            if on_end is not None:
                on_end(r, out)
            return out

        return go

    if len(runs) == 1:
        return [job(runs[0])()]
    batcher = GroupBatcher(cap=plan.spec.batch_members, paths=[r.path for r in runs])
    outcomes = batcher.run([job(r) for r in runs])
    return [
        o if isinstance(o, RunOutcome) else RunOutcome(r.name, "failed", f"{type(o).__name__}: {o}")
        for r, o in zip(runs, outcomes, strict=True)
    ]


def _verdicts(path: Path) -> list[tuple[str, str]]:
    from weightlab.runs.files import read_json

    try:
        s = read_json(Path(path) / "summary.json", "run summary")
        return [(c["id"], c["verdict"]) for c in s["claims"]]
    except Exception:
        return []


def outcome_line(i: int, n: int, o: RunOutcome) -> str:
    """One plain line per finished run."""
    if o.status == "failed":
        return f"[{i}/{n}] {o.run} FAILED: {o.error}"
    counts: dict[str, int] = {}
    for _, v in o.verdicts:
        counts[v] = counts.get(v, 0) + 1
    verdicts = ", ".join(f"{k} {v}" for v, k in counts.items()) or "no claims"
    if o.status == "skipped":
        return f"[{i}/{n}] {o.run} already done: {verdicts}"
    return f"[{i}/{n}] {o.run} done in {o.wall_s:.1f} s: {verdicts}"


def run_plan_local(
    plan: Plan,
    recorder: Any = None,
    echo: Callable[[str], None] = print,
    *,
    in_sweep: bool = True,
    first: int = 1,
    total: int | None = None,
) -> list[RunOutcome]:
    """Every group in order; one line per finished run, numbered from ``first`` of
    ``total`` (default: this plan's runs); the catalog written around each, its rows tied
    to the sweep when ``in_sweep`` (``reproduce`` runs one-point plans that are not sweeps)."""
    n = total if total is not None else len(plan.runs)
    done = [first - 1]
    outcomes: dict[str, RunOutcome] = {}
    sweep = plan.spec.id if in_sweep else None

    def on_start(r: PlannedRun) -> None:
        if recorder is not None:
            recorder.started(r.path, sweep=sweep, group=r.group if in_sweep else None)

    def on_end(r: PlannedRun, o: RunOutcome) -> None:
        if recorder is not None:
            recorder.finished(
                r.path, "done" if o.status == "done" else "failed", error=o.error, wall_s=o.wall_s
            )

    for gid, _ in plan.groups:
        for o in run_group(plan, gid, on_start=on_start, on_end=on_end):
            if o.status == "skipped" and recorder is not None:
                recorder.finished_before(plan.root / o.run)
            done[0] += 1
            outcomes[o.run] = o
            echo(outcome_line(done[0], n, o))
    return [outcomes[r.name] for r in plan.runs]
