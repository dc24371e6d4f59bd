"""The run catalog: ``ROOT/catalog.sqlite``, one row per run directory.

Tables (schema version :data:`SCHEMA_VERSION`, stored as SQLite's ``user_version``):

- ``runs``: ``id`` (the run directory's name), ``recipe``, ``family``, ``row`` (from the
  recipe registry; NULL for a recipe this install does not know), ``config`` and
  ``non_default`` (JSON), ``status`` (running, done, failed, incomplete), ``error``,
  ``host``, ``pid``, ``start``, ``end`` (Unix seconds), ``wall_s`` (summed over
  invocations), ``device``, ``threads``, ``versions`` (JSON: python, torch, weightlab),
  ``sweep``, ``batch_group``;
- ``claims``: ``run``, ``claim``, ``verdict``, ``statement``, ``detail`` (claim order =
  insertion order);
- ``metrics``: ``run``, ``name``, ``value`` (the summary's flat ``metrics``).

Several processes may write at once: the file is in WAL mode, every connection waits up
to 30 s for a lock (``busy_timeout``), and every write is one short ``BEGIN IMMEDIATE``
transaction (files are read before it starts). WAL needs all writers on one host and a
local disk (it does not work over a network filesystem, per sqlite.org).

A catalog SQLite cannot read (not a database, truncated, a corrupt page, a failing
``PRAGMA quick_check``, another schema version) is moved aside to
``catalog.sqlite.corrupt-<n>`` (with its ``-wal``/``-shm``) and rebuilt from the run
directories by :func:`weightlab.catalog.reindex`, with one warning line on stderr. The
check and the repair hold ``ROOT/catalog.sqlite.lock`` (``flock``) so that processes
opening a catalog at once repair it once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from weightlab.catalog.records import (
    STATUSES,
    RunRecord,
    config_device,
    hostname,
    read_run,
    read_summary,
    registry_info,
    threads,
    versions,
)
from weightlab.errors import RunFileError

SCHEMA_VERSION = 1
CATALOG_NAME = "catalog.sqlite"
BUSY_TIMEOUT_S = 30.0
RecipeInfo = Callable[[str], tuple[str | None, int | None]]

RUN_COLUMNS = (
    "id", "recipe", "family", "row", "config", "non_default", "status", "error", "host",
    "pid", "start", "end", "wall_s", "device", "threads", "versions", "sweep", "batch_group",
)  # fmt: skip
_COLS = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
_MARKS = ", ".join("?" for _ in RUN_COLUMNS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, recipe TEXT, family TEXT, "row" INTEGER, config TEXT,
    non_default TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'incomplete')),
    error TEXT, host TEXT, pid INTEGER, start REAL, "end" REAL, wall_s REAL, device TEXT,
    threads INTEGER, versions TEXT, sweep TEXT, batch_group TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    run TEXT NOT NULL, claim TEXT NOT NULL, verdict TEXT NOT NULL, statement TEXT,
    detail TEXT, UNIQUE (run, claim)
);
CREATE TABLE IF NOT EXISTS metrics (
    run TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, UNIQUE (run, name)
);
CREATE INDEX IF NOT EXISTS runs_recipe ON runs (recipe);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep);
"""


def catalog_path(root: Path) -> Path:
    return Path(root) / CATALOG_NAME


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits up to
    :data:`BUSY_TIMEOUT_S` for locks."""
    con = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return con


@contextlib.contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taking the write lock at once (``BEGIN IMMEDIATE``), so a
    reader never has to upgrade its lock (a deadlock the busy timeout does not resolve)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def init_schema(con: sqlite3.Connection) -> None:
    """WAL mode, the tables, and ``user_version`` (idempotent; a no-op on a catalog of
    this schema version)."""
    if con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    con.execute("PRAGMA journal_mode = WAL")
    with transaction(con):
        create_tables(con)


def create_tables(con: sqlite3.Connection) -> None:
    """The tables and indexes (if missing) and ``user_version``; inside a transaction."""
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            con.execute(stmt)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def catalog_lock(root: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``ROOT/catalog.sqlite.lock`` (no-op where there is no
    ``fcntl``): held while a catalog is checked, repaired or rebuilt."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(Path(root) / f"{CATALOG_NAME}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _busy(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(e)


def unreadable_reason(path: Path) -> str | None:
    """Why SQLite cannot use the catalog at ``path`` as this version's catalog (``None``
    if it can). A busy or locked database is not a reason: that error propagates."""
    try:
        con = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            rows = con.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                return "PRAGMA quick_check: " + " ".join(str(rows[0][0]).split())
            if version not in (0, SCHEMA_VERSION):
                return f"schema version {version}, this weightlab uses {SCHEMA_VERSION}"
            if version == SCHEMA_VERSION:
                cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                if not set(RUN_COLUMNS) <= cols:
                    return "its runs table lacks columns of this schema version"
        finally:
            con.close()
    except sqlite3.Error as e:
        if _busy(e):
            raise
        return str(e)
    return None


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm``) to ``<path>.corrupt-<n>``, the first
    free ``n`` from 1; returns the new path."""
    n = 1
    while path.with_name(f"{path.name}.corrupt-{n}").exists():
        n += 1
    dest = path.with_name(f"{path.name}.corrupt-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))
    os.replace(path, dest)
    return dest


def _json(obj: object) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True)


def record_values(rec: RunRecord, family: str | None, row: int | None) -> tuple:
    """``rec`` as the values of :data:`RUN_COLUMNS`."""
    return (
        rec.id, rec.recipe, family, row, _json(rec.config), _json(rec.non_default),
        rec.status, rec.error, rec.host, rec.pid, rec.start, rec.end, rec.wall_s,
        rec.device, rec.threads, _json(rec.versions), rec.sweep, rec.batch_group,
    )  # fmt: skip


def insert_record(con: sqlite3.Connection, rec: RunRecord, info: RecipeInfo) -> None:
    """Insert (or replace) ``rec`` with its claims and metrics; call inside a transaction."""
    family, row = info(rec.recipe) if rec.recipe else (None, None)
    con.execute(f"INSERT OR REPLACE INTO runs ({_COLS}) VALUES ({_MARKS})",
                record_values(rec, family, row))  # fmt: skip
    replace_results(con, rec.id, rec.claims, rec.metrics)


def replace_results(
    con: sqlite3.Connection,
    run: str,
    claims: list[tuple[str, str, str, str]],
    metrics: list[tuple[str, float]],
) -> None:
    con.execute("DELETE FROM claims WHERE run = ?", (run,))
    con.execute("DELETE FROM metrics WHERE run = ?", (run,))
    con.executemany(
        "INSERT INTO claims (run, claim, verdict, statement, detail) VALUES (?, ?, ?, ?, ?)",
        [(run, *c) for c in claims],
    )
    con.executemany(
        "INSERT INTO metrics (run, name, value) VALUES (?, ?, ?)", [(run, *m) for m in metrics]
    )


def cached_info(info: RecipeInfo | None) -> RecipeInfo:
    """``info`` (default: the recipe registry) memoized per recipe name."""
    info = info or registry_info
    memo: dict[str, tuple[str | None, int | None]] = {}

    def lookup(recipe: str) -> tuple[str | None, int | None]:
        if recipe not in memo:
            memo[recipe] = info(recipe)
        return memo[recipe]

    return lookup


class Catalog:
    """An open catalog; the writer's API (:meth:`record_start`, :meth:`record_end`) and the
    connection read by :mod:`weightlab.catalog.query`."""

    def __init__(self, root: Path, con: sqlite3.Connection, info: RecipeInfo) -> None:
        self.root = Path(root)
        self.path = catalog_path(root)
        self.con = con
        self._info = info

    # -- writers ---------------------------------------------------------------------
    def record_start(
        self, run_dir: Path, *, sweep: str | None = None, group: str | None = None
    ) -> None:
        """Mark ``run_dir`` running in this process: status ``running``, this host, pid,
        start time, thread count and versions; ``sweep``/``group`` default to the run's
        ``batch.json``. Earlier claims and metrics of the run are dropped (a new invocation
        writes its own); the summed wall time is kept."""
        run_dir = Path(run_dir)
        rec = _files_record(run_dir)
        family, row = self._info(rec.recipe) if rec.recipe else (None, None)
        values = {
            "id": rec.id, "recipe": rec.recipe, "family": family, "row": row,
            "config": _json(rec.config), "non_default": _json(rec.non_default),
            "status": "running", "error": None, "host": hostname(),
            "pid": os.getpid(), "start": time.time(), "end": None, "wall_s": None,
            "device": rec.device, "threads": threads(), "versions": _json(versions()),
            "sweep": sweep if sweep is not None else rec.sweep,
            "batch_group": group if group is not None else rec.batch_group,
        }  # fmt: skip
        keep = {"id", "wall_s"}
        update = ", ".join(f'"{c}" = excluded."{c}"' for c in RUN_COLUMNS if c not in keep)
        with transaction(self.con):
            self.con.execute(
                f"INSERT INTO runs ({_COLS}) VALUES ({_MARKS}) "
                f"ON CONFLICT (id) DO UPDATE SET {update}",
                tuple(values[c] for c in RUN_COLUMNS),
            )
            replace_results(self.con, rec.id, [], [])

    def record_end(
        self,
        run_dir: Path,
        status: str,
        *,
        error: str | None = None,
        wall_s: float | None = None,
    ) -> None:
        """Mark ``run_dir`` finished with ``status`` (done, failed or incomplete).

        ``wall_s`` is added to the run's stored wall time (default for ``done``: this
        invocation's ``timing.json``). On ``done`` the claims and metrics of
        ``summary.json`` replace the run's old rows (an unreadable summary is a
        :class:`~weightlab.errors.RunFileError`); otherwise the run has none. A run never
        started in this catalog gets its row here (host, pid and versions of this
        process, no start time)."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"status must be done, failed or incomplete, not {status!r}")
        run_dir = Path(run_dir)
        rec = _files_record(run_dir)
        claims: list = []
        metrics: list = []
        if status == "done":
            try:
                claims, metrics = read_summary(run_dir)
            except ValueError as e:
                raise RunFileError(
                    f"run summary {run_dir / 'summary.json'} {e}; re-run the recipe to recreate it"
                ) from None
            if wall_s is None:
                wall_s = rec.wall_s
        family, row = self._info(rec.recipe) if rec.recipe else (None, None)
        now = time.time()
        with transaction(self.con):
            self.con.execute(
                f"INSERT INTO runs ({_COLS}) VALUES ({_MARKS}) ON CONFLICT (id) DO NOTHING",
                (
                    rec.id, rec.recipe, family, row, _json(rec.config), _json(rec.non_default),
                    status, error, hostname(), os.getpid(), None, now, None,
                    rec.device, threads(), _json(versions()), rec.sweep, rec.batch_group,
                ),
            )  # fmt: skip
            self.con.execute(
                """UPDATE runs SET status = ?, error = ?, "end" = ?,
                   wall_s = CASE WHEN ? IS NULL THEN wall_s ELSE COALESCE(wall_s, 0) + ? END,
                   recipe = COALESCE(?, recipe), family = COALESCE(?, family),
                   "row" = COALESCE(?, "row"), config = COALESCE(?, config),
                   non_default = COALESCE(?, non_default), device = COALESCE(device, ?),
                   sweep = COALESCE(sweep, ?), batch_group = COALESCE(batch_group, ?)
                   WHERE id = ?""",
                (
                    status, error, now, wall_s, wall_s, rec.recipe, family, row,
                    _json(rec.config), _json(rec.non_default), rec.device, rec.sweep,
                    rec.batch_group, rec.id,
                ),
            )  # fmt: skip
            replace_results(self.con, rec.id, claims, metrics)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _files_record(run_dir: Path) -> RunRecord:
    """What the run directory says (config, batch, timing); a run directory without a
    readable config (a run that failed before it was opened) keeps only its name."""
    rec, _ = read_run(run_dir, summary=False)
    if rec is None:
        rec = RunRecord(id=run_dir.name)
    rec.device = rec.device or config_device(rec.config)
    return rec


def open_catalog(root: Path, *, recipe_info: RecipeInfo | None = None) -> Catalog:
    """Open ``ROOT/catalog.sqlite``, creating ``root`` and the catalog if missing.

    A file SQLite cannot read is moved aside and rebuilt from the run directories, with
    one warning line on stderr (see the module docstring). ``recipe_info(name) ->
    (family, row)`` overrides the recipe registry lookup (tests; default
    :func:`~weightlab.catalog.records.registry_info`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = catalog_path(root)
    info = cached_info(recipe_info)
    with catalog_lock(root):
        reason = unreadable_reason(path) if path.exists() else None
        if reason is not None:
            from weightlab.catalog.reindex import rebuild

            aside = move_aside(path)
            count, problems = rebuild(root, info)
            more = f"; {len(problems)} unreadable run file(s), see 'weightlab runs reindex'"
            print(
                f"weightlab: warning: catalog {path} could not be read ({reason}); moved it to "
                f"{aside.name} and rebuilt it from {count} run director"
                f"{'y' if count == 1 else 'ies'}{more if problems else ''}",
                file=sys.stderr,
            )
        con = connect(path)
        try:
            init_schema(con)
            con.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            con.close()
            raise
    return Catalog(root, con, info)
