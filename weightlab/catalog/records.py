"""Reading one run directory into a catalog row, from its files alone.

A run directory (:mod:`weightlab.runs.rundir`) holds ``config.json`` and, once finished,
``summary.json`` and ``timing.json``; ``running.json`` while a process works on it (left
behind by a killed one) and ``batch.json`` for a run of a sweep. :func:`read_run` turns
those files into a :class:`RunRecord`; a file that is missing, not JSON or of the wrong
shape becomes a problem string ``"<path>: <reason>"`` instead of an exception, so one bad
run never stops a reindex of thousands.

Status from files (used by ``reindex``): ``summary.json`` readable -> ``done``;
otherwise ``running`` if ``running.json`` names a live process on this host, else
``incomplete`` (the process is gone, or none ever wrote ``running.json``). ``failed``
is only known to the process that saw the failure (:meth:`Catalog.record_end`).

This module imports neither torch nor the recipe registry: the catalog's read commands
stay fast. The shape checks here cover only the fields the catalog stores; the full
checks of a summary are :func:`weightlab.runs.schema.expect_summary`'s.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import socket
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from weightlab.procs import pid_alive

VERDICTS = ("held", "did not hold", "not tested")
STATUSES = ("running", "done", "failed", "incomplete")
SKIP_DIRS = frozenset({"sweeps", "tensorboard"})


@dataclass
class RunRecord:
    """One row of ``runs`` plus its ``claims`` and ``metrics`` rows."""

    id: str
    recipe: str | None = None
    config: dict | None = None
    non_default: dict | None = None
    status: str = "incomplete"
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    start: float | None = None
    end: float | None = None
    wall_s: float | None = None
    device: str | None = None
    threads: int | None = None
    versions: dict | None = None
    sweep: str | None = None
    batch_group: str | None = None
    claims: list[tuple[str, str, str, str]] = field(default_factory=list)
    metrics: list[tuple[str, float]] = field(default_factory=list)


class _Bad(ValueError):
    """A run file that cannot be used; the message is the reason."""


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise _Bad(f"cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise _Bad("is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Bad(f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _object(obj: Any, fields: dict[str, type], what: str) -> dict:
    if not isinstance(obj, dict):
        raise _Bad(f"holds {type(obj).__name__}, not {what}")
    for key, types in fields.items():
        if key not in obj:
            raise _Bad(f"has no {key!r}")
        if not isinstance(obj[key], types):
            raise _Bad(f"has {key!r} of the wrong type")
    return obj


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def read_config(run_dir: Path) -> dict:
    """``config.json``: ``{"recipe", "config", "non_default"}``; raises ``ValueError``."""
    rec = _read_json(run_dir / "config.json")
    return _object(rec, {"recipe": str, "config": dict, "non_default": dict}, "a run config object")


def read_summary(run_dir: Path) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, float]]]:
    """The claims ``(claim, verdict, statement, detail)`` and metrics ``(name, value)`` of
    ``summary.json``, in file order; raises ``ValueError`` naming the bad field."""
    s = _object(_read_json(run_dir / "summary.json"), {"claims": list}, "a summary object")
    claims = []
    for i, c in enumerate(s["claims"]):
        try:
            _object(c, {"id": str, "verdict": str, "statement": str, "detail": str}, "a claim")
        except _Bad as e:
            raise _Bad(f"claims[{i}] {e}") from None
        if c["verdict"] not in VERDICTS:
            raise _Bad(f"claims[{i}] has verdict {c['verdict']!r}")
        claims.append((c["id"], c["verdict"], c["statement"], c["detail"]))
    metrics = s.get("metrics", {})
    if not isinstance(metrics, dict):
        raise _Bad("has 'metrics' that is not an object")
    values = []
    for name, v in metrics.items():
        x = _number(v)
        if x is None:
            raise _Bad(f"has metric {name!r} that is not a finite number")
        values.append((name, x))
    return claims, values


def _optional(run_dir: Path, name: str, problems: list[str]) -> dict | None:
    """An optional JSON object file; a bad one is a problem and reads as absent."""
    path = run_dir / name
    if not path.exists():
        return None
    try:
        obj = _read_json(path)
        if not isinstance(obj, dict):
            raise _Bad(f"holds {type(obj).__name__}, not an object")
        return obj
    except _Bad as e:
        problems.append(f"{path}: {e}")
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_run(run_dir: Path, summary: bool = True) -> tuple[RunRecord | None, list[str]]:
    """The catalog row of ``run_dir`` from its files, and the problems found
    (``summary=False``: config, batch, timing and running files only, status unset).

    ``None`` when ``config.json`` is unreadable (no recipe, so no row). Timestamps from
    files: ``start`` is ``running.json``'s start if present, else ``config.json``'s
    modification time; ``end`` is ``summary.json``'s modification time (done runs);
    ``wall_s``, ``host``, ``threads`` and ``versions`` are ``timing.json``'s (the last
    invocation only); a left-behind ``running.json`` gives ``host``/``pid``; ``error`` is
    not in the files and stays ``None``."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    try:
        cfg = read_config(run_dir)
    except _Bad as e:
        return None, [f"{run_dir / 'config.json'}: {e}"]
    rec = RunRecord(
        id=run_dir.name,
        recipe=cfg["recipe"],
        config=cfg["config"],
        non_default=cfg["non_default"],
        device=config_device(cfg["config"]),
        start=_mtime(run_dir / "config.json"),
    )
    batch = _optional(run_dir, "batch.json", problems)
    if batch is not None:
        rec.sweep = batch.get("sweep") if isinstance(batch.get("sweep"), str) else None
        rec.batch_group = batch.get("group") if isinstance(batch.get("group"), str) else None
    timing = _optional(run_dir, "timing.json", problems)
    if timing is not None:
        rec.wall_s = _number(timing.get("wall_s"))
        t = timing.get("threads")
        rec.threads = t if isinstance(t, int) and not isinstance(t, bool) else None
        v = timing.get("versions")
        rec.versions = v if isinstance(v, dict) else None
        rec.host = timing.get("host") if isinstance(timing.get("host"), str) else None
    running = _optional(run_dir, "running.json", problems)
    if running is not None:
        rec.host = running.get("host") if isinstance(running.get("host"), str) else None
        pid = running.get("pid")
        rec.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
        rec.start = _number(running.get("start")) or rec.start
    if not summary:
        return rec, problems
    path = run_dir / "summary.json"
    if path.exists():
        try:
            rec.claims, rec.metrics = read_summary(run_dir)
            rec.status = "done"
            rec.end = _mtime(path)
            return rec, problems
        except _Bad as e:
            problems.append(f"{path}: {e}")
            rec.error = f"summary.json {e}"
    alive = rec.pid is not None and rec.host == hostname() and pid_alive(rec.pid)
    rec.status = "running" if alive else "incomplete"
    return rec, problems


def list_run_dirs(root: Path) -> list[Path]:
    """Every run directory of ``root``: ``ROOT/*/config.json`` but ``sweeps`` and
    ``tensorboard``, sorted by name."""
    return sorted(
        p.parent for p in Path(root).glob("*/config.json") if p.parent.name not in SKIP_DIRS
    )


def config_device(config: dict | None) -> str | None:
    """The config's ``device`` field, if it has one."""
    d = (config or {}).get("device")
    return d if isinstance(d, str) else None


@cache
def hostname() -> str:
    return socket.gethostname()


@cache
def versions() -> dict[str, str | None]:
    """Python, torch and weightlab versions of this process (torch's without importing it)."""
    from weightlab import __version__

    try:
        torch_version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {"python": platform.python_version(), "torch": torch_version, "weightlab": __version__}


def threads() -> int | None:
    """torch's intra-op thread count if this process has imported torch, else ``None``."""
    torch = sys.modules.get("torch")
    get = getattr(torch, "get_num_threads", None)
    return int(get()) if get is not None else None


def registry_info(recipe: str) -> tuple[str | None, int | None]:
    """``(family, row)`` of a registered recipe; ``(None, None)`` for one this install does
    not know. Imports the recipe registry (and torch) on first use."""
    from weightlab.errors import WeightlabError
    from weightlab.recipes.registry import all_recipes

    try:
        cls = all_recipes().get(recipe)
    except WeightlabError:
        return None, None
    if cls is None:
        return None, None
    return getattr(cls, "family", None), getattr(cls, "row", None)
