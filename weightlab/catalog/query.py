"""Reading the catalog: runs as plain dicts, filters, and run references.

A run as read here is ``{column: value}`` over :data:`~weightlab.catalog.store.RUN_COLUMNS`
(``config``, ``non_default`` and ``versions`` parsed from JSON) plus ``claims`` (a list of
``{claim, verdict, statement, detail}`` in claim order) and ``metrics`` (``{name: value}``
in summary order).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from weightlab.catalog.records import STATUSES, VERDICTS, RunRecord, read_run
from weightlab.catalog.store import RUN_COLUMNS, Catalog, record_values
from weightlab.errors import ConfigError

_COLS = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
_JSON_COLUMNS = ("config", "non_default", "versions")


def _row(values: tuple) -> dict:
    run = dict(zip(RUN_COLUMNS, values, strict=True))
    for c in _JSON_COLUMNS:
        run[c] = json.loads(run[c]) if run[c] is not None else None
    return run


def _results(con: sqlite3.Connection, runs: list[dict]) -> list[dict]:
    by_id = {r["id"]: r for r in runs}
    for r in runs:
        r["claims"], r["metrics"] = [], {}
    if not runs:
        return runs
    for run, claim, verdict, statement, detail in con.execute(
        "SELECT run, claim, verdict, statement, detail FROM claims ORDER BY rowid"
    ):
        if run in by_id:
            by_id[run]["claims"].append(
                {"claim": claim, "verdict": verdict, "statement": statement, "detail": detail}
            )
    for run, name, value in con.execute("SELECT run, name, value FROM metrics ORDER BY rowid"):
        if run in by_id:
            by_id[run]["metrics"][name] = value
    return runs


def get_run(con: sqlite3.Connection, run_id: str) -> dict | None:
    """The run ``run_id`` with its claims and metrics, or ``None``."""
    row = con.execute(f"SELECT {_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = _row(row)
    run["claims"] = [
        {"claim": c, "verdict": v, "statement": s, "detail": d}
        for c, v, s, d in con.execute(
            "SELECT claim, verdict, statement, detail FROM claims WHERE run = ? ORDER BY rowid",
            (run_id,),
        )
    ]
    run["metrics"] = dict(
        con.execute("SELECT name, value FROM metrics WHERE run = ? ORDER BY rowid", (run_id,))
    )
    return run


def verdict_counts(run: dict) -> dict[str, int]:
    """``{verdict: count}`` over the run's claims, in the order held, did not hold, not
    tested (verdicts with no claim left out)."""
    counts = {v: 0 for v in VERDICTS}
    for c in run["claims"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    return {v: n for v, n in counts.items() if n}


def list_runs(
    con: sqlite3.Connection,
    *,
    recipe: str | None = None,
    family: str | None = None,
    held: bool | None = None,
    status: str | None = None,
    sweep: str | None = None,
) -> list[dict]:
    """Runs matching every given filter, oldest start first (then by id). ``held=True``:
    every claim held (and there is one); ``held=False``: at least one did not hold."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)}")
    where, args = [], []
    for column, value in (("recipe", recipe), ("family", family), ("status", status),
                          ("sweep", sweep)):  # fmt: skip
        if value is not None:
            where.append(f'"{column}" = ?')
            args.append(value)
    if held is True:
        where.append(
            "EXISTS (SELECT 1 FROM claims c WHERE c.run = runs.id) AND NOT EXISTS "
            "(SELECT 1 FROM claims c WHERE c.run = runs.id AND c.verdict != 'held')"
        )
    elif held is False:
        where.append(
            "EXISTS (SELECT 1 FROM claims c WHERE c.run = runs.id AND c.verdict = 'did not hold')"
        )
    sql = f"SELECT {_COLS} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start IS NULL, start, id"
    return _results(con, [_row(r) for r in con.execute(sql, args)])


def _from_files(cat: Catalog, run_dir: Path) -> dict:
    """A run directory outside the catalog, read from its files (not written)."""
    rec, _ = read_run(run_dir)
    if rec is None:
        rec = RunRecord(id=run_dir.name)
    family, row = cat._info(rec.recipe) if rec.recipe else (None, None)
    run = _row(record_values(rec, family, row))
    run["claims"] = [
        {"claim": c, "verdict": v, "statement": s, "detail": d} for c, v, s, d in rec.claims
    ]
    run["metrics"] = dict(rec.metrics)
    return run


def resolve(cat: Catalog, ref: str) -> dict:
    """The run ``ref`` names: a run id, a unique prefix of one, or a path to a run
    directory (one outside this catalog is read from its files). An unknown run or a
    prefix of several is a one-line :class:`~weightlab.errors.ConfigError`."""
    con = cat.con
    path = Path(ref)
    if (path / "config.json").is_file() and ("/" in ref or path.is_absolute() or ref == "."):
        path = path.resolve()
        if path.parent == cat.root.resolve():
            run = get_run(con, path.name)
            if run is not None:
                return run
        return _from_files(cat, path)
    run = get_run(con, ref)
    if run is not None:
        return run
    escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    ids = [
        r[0]
        for r in con.execute(
            "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id", (escaped + "%",)
        )
        if r[0].startswith(ref)  # LIKE ignores ASCII case
    ]
    if len(ids) == 1:
        return get_run(con, ids[0])  # type: ignore[return-value]
    if not ids:
        raise ConfigError(
            f"unknown run {ref!r} in {cat.path}; see 'weightlab runs list --root {cat.root}'"
        )
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    raise ConfigError(f"run prefix {ref!r} matches {len(ids)} runs: {shown}; give more of the name")
