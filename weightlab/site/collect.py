"""Read what the site shows from a root's files alone: run directories and sweep records.

Everything comes from the files a run writes (:mod:`weightlab.runs.rundir`):
``config.json``, ``summary.json``, ``timing.json``, ``batch.json``, ``running.json`` and the
report's PNG figures, and from the sweep records ``ROOT/sweeps/<id>.json``; never from the
catalog, so the site can be rebuilt from a copied root. A file that is missing, not JSON or
of the wrong shape becomes a problem line (listed on the index), never an exception: one
bad run does not stop the site.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightlab.runs.schema import expect_config_record, expect_summary

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RunInfo:
    """One run directory as the site sees it.

    ``status``: ``done`` (a readable ``summary.json``), ``running`` (``running.json`` and no
    summary) or ``incomplete``. ``mtime``: ``summary.json``'s modification time (0 when
    unfinished); the newest finished run of a config is the one with the largest."""

    name: str
    path: Path
    recipe: str
    config: dict
    non_default: dict
    summary: dict | None = None
    timing: dict | None = None
    batch: dict | None = None
    status: str = "incomplete"
    mtime: float = 0.0
    pngs: list[Path] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.summary is not None

    @property
    def is_default(self) -> bool:
        return not self.non_default

    @property
    def metrics(self) -> dict[str, float]:
        m = (self.summary or {}).get("metrics")
        return m if isinstance(m, dict) else {}

    def claims(self) -> list[dict]:
        return list((self.summary or {}).get("claims", []))


@dataclass
class SweepInfo:
    """A sweep record ``ROOT/sweeps/<id>.json`` (format 1)."""

    id: str
    path: Path
    spec: dict
    runs: list[dict]
    groups: list[dict]

    @property
    def grid_keys(self) -> list[str]:
        """The grid's keys in the order given (first = the plot's x axis): the record's
        ``grid_order`` when present, else inferred from the runs (:func:`grid_order`)."""
        grid = self.spec.get("grid", {})
        order = self.spec.get("grid_order")
        if isinstance(order, list) and sorted(map(str, order)) == sorted(grid):
            return [str(k) for k in order]
        return grid_order(grid, [e.get("point", {}) for e in self.runs])


def grid_order(grid: dict[str, list], points: list[dict]) -> list[str]:
    """The keys of ``grid`` in the order the sweep was given, recovered from its points.

    A sweep record's ``grid`` is a JSON object whose keys may have been sorted on
    writing, but its runs are the Cartesian product in the given order (the first key
    varies slowest), so a key given earlier changes value fewer times between consecutive
    points. Keys with a single value (they never change) go last; ties keep the record's
    order."""
    keys = list(grid)

    def changes(k: str) -> int:
        return sum(a.get(k) != b.get(k) for a, b in zip(points, points[1:], strict=False))

    return sorted(keys, key=lambda k: (len(grid[k]) <= 1, changes(k), keys.index(k)))


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _why(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON (line {e.lineno}, column {e.colno})"
    if isinstance(e, OSError):
        return f"unreadable ({type(e).__name__})"
    return str(e)


def read_run(path: Path) -> tuple[RunInfo | None, list[str]]:
    """The run in ``path`` and its problems (``"<file>: <reason>"``); ``None`` when its
    ``config.json`` cannot be read (then the run cannot be placed at all)."""
    problems: list[str] = []
    cfg_path = path / "config.json"
    try:
        record = expect_config_record(_read(cfg_path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, [f"{cfg_path}: {_why(e)}"]
    run = RunInfo(
        name=path.name,
        path=path,
        recipe=record["recipe"],
        config=record["config"],
        non_default=record["non_default"],
    )
    summary_path = path / "summary.json"
    if summary_path.exists():
        try:
            run.summary = expect_summary(_read(summary_path))
            run.mtime = summary_path.stat().st_mtime
            run.status = "done"
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problems.append(f"{summary_path}: {_why(e)}")
    if run.summary is None and (path / "running.json").exists():
        run.status = "running"
    for name in ("timing", "batch"):
        p = path / f"{name}.json"
        if not p.exists():
            continue
        try:
            obj = _read(p)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            setattr(run, name, obj)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problems.append(f"{p}: {_why(e)}")
    run.pngs = sorted(p for p in path.glob("*.png") if p.is_file() and SAFE_NAME.match(p.name))
    return run, problems


def collect_runs(root: Path) -> tuple[list[RunInfo], list[str]]:
    """Every run directory directly under ``root`` (a folder holding ``config.json``;
    others such as ``sweeps/`` or a site are skipped), sorted by name, and the problems."""
    runs: list[RunInfo] = []
    problems: list[str] = []
    for d in sorted(Path(root).iterdir()):
        if not d.is_dir() or not (d / "config.json").exists():
            continue
        if not SAFE_NAME.match(d.name):
            problems.append(f"{d}: a run directory name the site cannot link; rename it")
            continue
        run, probs = read_run(d)
        problems += probs
        if run is not None:
            runs.append(run)
    return runs, problems


def _expect_sweep(obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    if obj.get("format") != 1:
        raise ValueError(f"format {obj.get('format')!r} is not 1")
    for key, typ in (("id", str), ("spec", dict), ("runs", list), ("groups", list)):
        if not isinstance(obj.get(key), typ):
            raise ValueError(f"{key!r} is missing or of the wrong type")
    if not SAFE_NAME.match(obj["id"]):
        raise ValueError(f"id {obj['id']!r} is not a plain name")
    grid = obj["spec"].get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise ValueError("spec.grid is not an object of lists")
    for i, r in enumerate(obj["runs"]):
        if not (isinstance(r, dict) and isinstance(r.get("run"), str)):
            raise ValueError(f"runs[{i}] has no run name")
        if not isinstance(r.get("point", {}), dict):
            raise ValueError(f"runs[{i}].point is not an object")
    return obj


def collect_sweeps(root: Path) -> tuple[list[SweepInfo], list[str]]:
    """The sweep records under ``root/sweeps`` sorted by id, and the problems."""
    out: list[SweepInfo] = []
    problems: list[str] = []
    folder = Path(root) / "sweeps"
    if not folder.is_dir():
        return out, problems
    for p in sorted(folder.glob("*.json")):
        try:
            obj = _expect_sweep(_read(p))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problems.append(f"{p}: {_why(e)}")
            continue
        out.append(SweepInfo(obj["id"], p, obj["spec"], obj["runs"], obj["groups"]))
    return out, problems


def newest_default(runs: list[RunInfo]) -> RunInfo | None:
    """The newest finished default-config run (largest ``summary.json`` mtime; the name
    breaks ties), or None."""
    cands = [r for r in runs if r.done and r.is_default]
    return max(cands, key=lambda r: (r.mtime, r.name)) if cands else None


def newest_finished(runs: list[RunInfo]) -> RunInfo | None:
    """The newest finished run of any config (smoke sites link it), or None."""
    cands = [r for r in runs if r.done]
    return max(cands, key=lambda r: (r.mtime, r.name)) if cands else None


def claim_metrics(metrics: dict[str, float], claim_id: str) -> dict[str, float]:
    """The metrics a claim decides on: those named ``<claim id>.<path>``."""
    prefix = f"{claim_id}."
    return {k: v for k, v in metrics.items() if k.startswith(prefix)}
