"""Rebuild the catalog from the run directories alone.

Every ``ROOT/*/config.json`` (but ``ROOT/sweeps`` and ``ROOT/tensorboard``) is read into a
row (:func:`weightlab.catalog.records.read_run`) of a new database written to a temporary
file ``ROOT/.catalog.sqlite.<pid>.tmp``. Where there is no readable catalog (none yet, or
a corrupt one moved aside) the temporary file is renamed into place; otherwise its rows
replace the catalog's in one write transaction, so a process that has the catalog open
(a running sweep) keeps writing to the live file: a rename over an open SQLite database
would leave its writes in the old, unlinked file, and its WAL beside the new one. Either
way a reader sees the old catalog or the new one, never half of one.

What the files do not hold stays empty after a rebuild: ``threads``, ``versions`` and
``error`` (a failed run reads as ``incomplete``), ``host``/``pid`` of finished runs;
``start``/``end`` come from file times and ``wall_s`` from the last invocation's
``timing.json`` (the incremental catalog sums every invocation's). A run recorded by a
writer while the rebuild reads the directories is rebuilt as its files stood then.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from weightlab.catalog.records import list_run_dirs, read_run
from weightlab.catalog.store import (
    CATALOG_NAME,
    RUN_COLUMNS,
    RecipeInfo,
    cached_info,
    catalog_lock,
    catalog_path,
    connect,
    create_tables,
    init_schema,
    insert_record,
    transaction,
    unreadable_reason,
)
from weightlab.errors import ConfigError


def reindex(root: Path, *, recipe_info: RecipeInfo | None = None) -> list[str]:
    """Rebuild ``ROOT/catalog.sqlite`` from ``root``'s run directories; returns the
    unreadable run files, each as ``"<path>: <reason>"``. ``recipe_info`` as in
    :func:`~weightlab.catalog.store.open_catalog`."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"run folder {root} does not exist; pass the folder of your runs (--root)"
        )
    with catalog_lock(root):
        _, problems = rebuild(root, cached_info(recipe_info))
    return problems


def rebuild(root: Path, info: RecipeInfo) -> tuple[int, list[str]]:
    """:func:`reindex` without the lock (the caller holds it); returns the number of runs
    and the problems."""
    root = Path(root)
    records, problems = [], []
    for d in list_run_dirs(root):
        rec, found = read_run(d)
        problems += found
        if rec is not None:
            records.append(rec)
    tmp = root / f".{CATALOG_NAME}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        con = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode = OFF")
            con.execute("PRAGMA synchronous = OFF")
            con.execute("BEGIN")
            create_tables(con)
            for rec in records:
                insert_record(con, rec, info)
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode = WAL")
        finally:
            con.close()
        path = catalog_path(root)
        if path.exists() and unreadable_reason(path) is None:
            _copy_into(path, tmp)
            tmp.unlink()
        else:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _retire_old(path)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(records), problems


def _copy_into(path: Path, fresh: Path) -> None:
    """Replace every row of the readable catalog ``path`` by those of ``fresh`` in one
    write transaction: processes that have the catalog open keep a valid file (a rename
    over an open SQLite database would leave their writes in the old, unlinked file)."""
    cols = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
    con = connect(path)
    try:
        init_schema(con)
        con.execute("ATTACH DATABASE ? AS fresh", (str(fresh),))
        with transaction(con):
            for table in ("runs", "claims", "metrics"):
                con.execute(f"DELETE FROM main.{table}")
            con.execute(f"INSERT INTO main.runs ({cols}) SELECT {cols} FROM fresh.runs")
            con.execute(
                "INSERT INTO main.claims (run, claim, verdict, statement, detail) "
                "SELECT run, claim, verdict, statement, detail FROM fresh.claims ORDER BY rowid"
            )
            con.execute(
                "INSERT INTO main.metrics (run, name, value) "
                "SELECT run, name, value FROM fresh.metrics ORDER BY rowid"
            )
        con.execute("DETACH DATABASE fresh")
    finally:
        con.close()


def _retire_old(path: Path) -> None:
    """Fold the old catalog's WAL into it, then remove its ``-wal``/``-shm``: a stale WAL
    beside the new file would be replayed into it."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and path.exists():
        try:
            con = sqlite3.connect(str(path), timeout=30.0)
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                con.close()
        except sqlite3.Error:
            pass  # an unreadable old catalog: its WAL goes with it
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
