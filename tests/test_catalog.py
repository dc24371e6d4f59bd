"""The run catalog (weightlab.catalog): concurrent writers, reindex, corrupt files.

Run directories here are tiny fakes with the real file shapes (``config.json`` as
``RunDir.open`` writes it, a ``summary.json`` that passes ``expect_summary``), not recipe
runs; the recipe lookup is a stub so no process imports the recipe registry.
Run as a script (``python test_catalog.py worker ROOT I GO``) it is one of the writer
processes of :func:`test_eight_processes_write_at_once`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

FAMILY_ROW = ("sparsity", 99)


def fake_info(recipe: str) -> tuple[str | None, int | None]:
    return FAMILY_ROW if recipe.startswith("fake") else (None, None)


def make_run(
    root: Path,
    name: str,
    *,
    recipe: str = "fake-recipe",
    lr: float = 0.1,
    verdicts: tuple[str, ...] = ("held", "not tested"),
    summary: bool = True,
    wall_s: float | None = 1.25,
    batch: tuple[str, str] | None = None,
    running_pid: int | None = None,
) -> Path:
    """A run directory with real file shapes: config.json, summary.json (claims with
    evidence, and metrics the evidence's numeric leaves), timing.json, batch.json,
    running.json."""
    d = root / name
    (d / "units").mkdir(parents=True)
    config = {"device": "cpu", "epochs": 3, "lr": lr}
    write(d / "config.json", {"recipe": recipe, "config": config, "non_default": {"lr": lr}})
    if batch is not None:
        write(d / "batch.json", {"sweep": batch[0], "group": batch[1], "group_runs": [name]})
    if running_pid is not None:
        write(d / "running.json", {"pid": running_pid, "host": os.uname().nodename, "start": 1e9})
    if summary:
        held = {"held": True, "did not hold": False, "not tested": None}
        claims = [
            {
                "id": chr(ord("a") + i),
                "quote": "a quoted sentence of the paper",
                "statement": f"statement {i}",
                "verdict": v,
                "held": held[v],
                "detail": f"gap {lr * (i + 1):.2f} pts",
                "evidence": {} if v == "not tested" else {"gap": lr * (i + 1), "n": [1, 2]},
            }
            for i, v in enumerate(verdicts)
        ]
        metrics = {}
        for c in claims:
            for k, v in c["evidence"].items():
                for j, x in enumerate(v) if isinstance(v, list) else [(None, v)]:
                    metrics[f"{c['id']}.{k}" + ("" if j is None else f".{j}")] = float(x)
        write(d / "summary.json", {"recipe": recipe, "claims": claims, "metrics": metrics})
        if wall_s is not None:
            write(d / "timing.json", {"wall_s": wall_s, "computed_units": [], "measurements": []})
    return d


def write(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def rows(path: Path, drop: tuple[str, ...] = ()) -> dict:
    """Every table of a catalog as sorted rows (``drop``: runs columns left out)."""
    con = sqlite3.connect(path)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(runs)") if r[1] not in drop]
        sel = ", ".join(f'"{c}"' for c in cols)
        return {
            "runs": sorted(con.execute(f"SELECT {sel} FROM runs").fetchall()),
            "claims": con.execute("SELECT * FROM claims ORDER BY run, rowid").fetchall(),
            "metrics": con.execute("SELECT * FROM metrics ORDER BY run, rowid").fetchall(),
        }
    finally:
        con.close()


# -- the writer process ------------------------------------------------------------------
def _worker(root: Path, i: int, go: Path) -> None:
    from weightlab.catalog import open_catalog

    dirs = [make_run(root, f"fake-w{i}-{k:02d}", lr=0.01 * k) for k in range(50)]
    while not go.exists():  # start together
        time.sleep(0.005)
    cat = open_catalog(root, recipe_info=fake_info)
    for d in dirs:
        cat.record_start(d, sweep=f"s{i}", group="g00")
        cat.record_end(d, "done")
    cat.close()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    sys.exit(0)


import pytest  # noqa: E402

from weightlab.catalog import SCHEMA_VERSION, open_catalog, reindex  # noqa: E402
from weightlab.catalog.records import read_run  # noqa: E402
from weightlab.errors import ConfigError, RunFileError  # noqa: E402

# columns the files do not hold or hold differently (documented in weightlab/catalog/reindex.py)
ENVIRONMENT = ("host", "pid", "start", "end", "threads", "versions", "error")


def test_fake_runs_have_the_real_shapes(tmp_path):
    from weightlab.runs.schema import check_config, check_summary

    d = make_run(tmp_path, "fake-x", verdicts=("held", "did not hold", "not tested"))
    check_config(json.loads((d / "config.json").read_text()), d / "config.json")
    s = check_summary(json.loads((d / "summary.json").read_text()), d / "summary.json")
    assert s["metrics"] == {"a.gap": 0.1, "a.n.0": 1.0, "a.n.1": 2.0, "b.gap": 0.2, "b.n.0": 1.0,
                            "b.n.1": 2.0}  # fmt: skip


def test_schema_wal_busy_timeout_and_a_run_recorded(tmp_path):
    root = tmp_path / "runs"
    d = make_run(root, "fake-a", verdicts=("held", "did not hold"), batch=("sw1", "g01"))
    with open_catalog(root, recipe_info=fake_info) as cat:
        con = cat.con
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        cat.record_start(d)
        run = dict(zip([c[0] for c in con.execute("SELECT * FROM runs").description],
                       con.execute("SELECT * FROM runs").fetchone(), strict=True))  # fmt: skip
        assert run["status"] == "running" and run["pid"] == os.getpid()
        assert (run["sweep"], run["batch_group"]) == ("sw1", "g01")  # from batch.json
        assert (run["family"], run["row"], run["device"]) == ("sparsity", 99, "cpu")
        assert json.loads(run["versions"])["weightlab"]
        cat.record_end(d, "done", wall_s=2.0)
        cat.record_start(d)  # a second invocation: claims cleared, wall time kept
        assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
        cat.record_end(d, "done", wall_s=0.5)
        status, wall, end = con.execute('SELECT status, wall_s, "end" FROM runs').fetchone()
        assert (status, wall) == ("done", 2.5) and end is not None
        assert con.execute("SELECT claim, verdict, statement FROM claims ORDER BY rowid").fetchall() == [
            ("a", "held", "statement 0"), ("b", "did not hold", "statement 1")
        ]  # fmt: skip
        assert dict(con.execute("SELECT name, value FROM metrics")) == {
            "a.gap": 0.1, "a.n.0": 1.0, "a.n.1": 2.0, "b.gap": 0.2, "b.n.0": 1.0, "b.n.1": 2.0
        }  # fmt: skip


def test_record_end_failed_without_start_and_bad_status(tmp_path):
    root = tmp_path / "runs"
    d = make_run(root, "fake-f", summary=False)
    with open_catalog(root, recipe_info=fake_info) as cat:
        cat.record_end(d, "failed", error="DataError: no such task", wall_s=0.2)
        # a run that failed before its directory was opened keeps only its name
        cat.record_end(root / "fake-never-opened", "failed", error="ConfigError: bad")
        got = cat.con.execute("SELECT id, recipe, status, error, wall_s FROM runs ORDER BY id")
        assert got.fetchall() == [
            ("fake-f", "fake-recipe", "failed", "DataError: no such task", 0.2),
            ("fake-never-opened", None, "failed", "ConfigError: bad", None),
        ]
        with pytest.raises(ValueError, match="status"):
            cat.record_end(d, "running")
        (d / "summary.json").write_text("{")
        with pytest.raises(RunFileError, match="summary.json"):
            cat.record_end(d, "done")


def test_eight_processes_write_at_once(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", str(root), str(i), str(go)], env=env)
        for i in range(8)
    ]
    time.sleep(0.3)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    con = sqlite3.connect(root / "catalog.sqlite")
    assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM runs").fetchone() == (400, 400)
    assert con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall() == [
        ("done", 400)
    ]
    assert con.execute("SELECT COUNT(DISTINCT sweep), COUNT(DISTINCT pid) FROM runs").fetchone() == (
        8, 8
    )  # fmt: skip
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 800
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 400 * 3
    con.close()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _mixed_root(root: Path) -> list[Path]:
    return [
        make_run(root, "fake-a", lr=0.1),
        make_run(root, "fake-b", lr=0.2, verdicts=("did not hold",), batch=("sw", "g00")),
        make_run(root, "fake-c", lr=0.3, verdicts=("held", "held"), batch=("sw", "g00")),
        make_run(root, "other-d", recipe="not-installed", lr=0.4, wall_s=None),
        make_run(root, "fake-e", summary=False, running_pid=_dead_pid()),  # killed
        make_run(root, "fake-f", summary=False),  # config only
    ]


def test_reindex_equals_the_incremental_catalog(tmp_path):
    inc, full = tmp_path / "inc", tmp_path / "full"
    for root in (inc, full):
        dirs = _mixed_root(root)
    with open_catalog(inc, recipe_info=fake_info) as cat:
        for d in dirs[:4]:
            cat.record_start(d)
            cat.record_end(d, "done")
        for d in dirs[4:]:
            cat.record_start(d)
            cat.record_end(d, "incomplete")
    (full / "sweeps").mkdir()  # skipped, as is tensorboard/
    write(full / "sweeps" / "config.json", {"recipe": "x", "config": {}, "non_default": {}})
    assert reindex(full, recipe_info=fake_info) == []
    a, b = rows(inc / "catalog.sqlite", ENVIRONMENT), rows(full / "catalog.sqlite", ENVIRONMENT)
    assert a == b
    assert len(a["runs"]) == 6 and len(a["claims"]) == 7 and len(a["metrics"]) == 15
    con = sqlite3.connect(full / "catalog.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    got = dict(con.execute("SELECT id, status || ' ' || IFNULL(family, '-') FROM runs"))
    assert got == {"fake-a": "done sparsity", "fake-b": "done sparsity", "fake-c": "done sparsity",
                   "other-d": "done -", "fake-e": "incomplete sparsity",
                   "fake-f": "incomplete sparsity"}  # fmt: skip
    con.close()
    # reindex over an existing catalog replaces its rows, and is idempotent; a writer
    # that has the catalog open (a running sweep) keeps writing to the live file
    writer = open_catalog(inc, recipe_info=fake_info)
    writer.record_start(dirs[0])  # status running, claims cleared, WAL frames pending
    assert reindex(inc, recipe_info=fake_info) == []
    assert rows(inc / "catalog.sqlite", ENVIRONMENT) == b
    new = make_run(inc, "fake-g", lr=0.9)
    writer.record_start(new)
    writer.record_end(new, "done")
    writer.close()
    after = rows(inc / "catalog.sqlite", ENVIRONMENT)
    assert [r[0] for r in after["runs"]] == sorted([r[0] for r in b["runs"]] + ["fake-g"])
    con = sqlite3.connect(inc / "catalog.sqlite")
    assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    con.close()
    assert not list(inc.glob(".*.tmp"))


def test_status_from_files(tmp_path):
    d = make_run(tmp_path, "fake-r", summary=False, running_pid=os.getpid())
    rec, problems = read_run(d)
    assert (rec.status, rec.pid, rec.start, problems) == ("running", os.getpid(), 1e9, [])
    (d / "running.json").write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    assert read_run(d)[0].status == "incomplete"


def test_reindex_lists_unreadable_files(tmp_path):
    make_run(tmp_path, "fake-a")
    make_run(tmp_path, "fake-b").joinpath("config.json").write_text("[1, 2")
    make_run(tmp_path, "fake-c").joinpath("summary.json").write_text('{"claims": 3}')
    make_run(tmp_path, "fake-d").joinpath("timing.json").write_text("[]")
    problems = reindex(tmp_path, recipe_info=fake_info)
    assert problems == [
        f"{tmp_path / 'fake-b' / 'config.json'}: is not valid JSON "
        "(Expecting ',' delimiter at line 1, column 6)",
        f"{tmp_path / 'fake-c' / 'summary.json'}: has 'claims' of the wrong type",
        f"{tmp_path / 'fake-d' / 'timing.json'}: holds list, not an object",
    ]
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert dict(con.execute("SELECT id, status FROM runs")) == {
        "fake-a": "done", "fake-c": "incomplete", "fake-d": "done"
    }  # fmt: skip
    con.close()
    with pytest.raises(ConfigError, match="does not exist"):
        reindex(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def _corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    assert len(data) >= 4 * 4096, "the catalog should span several pages"
    if kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2 + 100])
    else:  # a zeroed page (page 2: the first table's root)
        path.write_bytes(data[:4096] + bytes(4096) + data[8192:])


@pytest.mark.parametrize("kind", ["garbage", "truncated", "zeroed page"])
def test_a_corrupt_catalog_is_moved_aside_and_rebuilt(tmp_path, capfd, kind):
    root = tmp_path / "runs"
    dirs = [make_run(root, f"fake-{i:02d}", lr=i / 10, verdicts=("held",) * 4) for i in range(30)]
    with open_catalog(root, recipe_info=fake_info) as cat:
        for d in dirs:
            cat.record_end(d, "done")
    path = root / "catalog.sqlite"
    assert not path.with_name("catalog.sqlite-wal").exists()  # checkpointed at close
    before = rows(path, ENVIRONMENT)
    _corrupt(path, kind)
    con = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):  # SQLite itself raises on each
        for table in ("runs", "claims", "metrics"):
            con.execute(f"SELECT * FROM {table}").fetchall()
    con.close()
    capfd.readouterr()
    with open_catalog(root, recipe_info=fake_info) as cat:
        n = cat.con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    err = capfd.readouterr().err
    assert n == 30 and len(err.splitlines()) == 1, err
    assert err.startswith(f"weightlab: warning: catalog {path} could not be read (")
    assert "moved it to catalog.sqlite.corrupt-1 and rebuilt it from 30 run directories" in err
    assert path.with_name("catalog.sqlite.corrupt-1").exists()
    assert rows(path, ENVIRONMENT) == before
    with open_catalog(root, recipe_info=fake_info):  # healthy now: no warning
        pass
    assert capfd.readouterr().err == ""


def test_list_filters_and_run_references(tmp_path):
    from weightlab.catalog.query import list_runs, resolve

    root = tmp_path / "runs"
    _mixed_root(root)
    reindex(root, recipe_info=fake_info)
    other = make_run(tmp_path / "elsewhere", "fake-zz", lr=0.7)
    with open_catalog(root, recipe_info=fake_info) as cat:

        def listed(**kw) -> list[str]:
            return sorted(r["id"] for r in list_runs(cat.con, **kw))

        assert listed(held=True) == ["fake-c"]  # every claim held
        assert listed(held=False) == ["fake-b"]  # one did not hold
        assert listed(sweep="sw") == ["fake-b", "fake-c"]
        assert listed(status="incomplete") == ["fake-e", "fake-f"]
        assert listed(family="sparsity", recipe="fake-recipe", status="done") == [
            "fake-a", "fake-b", "fake-c"
        ]  # fmt: skip
        with pytest.raises(ConfigError, match="unknown status 'gone'"):
            listed(status="gone")
        assert resolve(cat, "fake-c")["metrics"] == {"a.gap": 0.3, "a.n.0": 1.0, "a.n.1": 2.0,
                                                      "b.gap": 0.6, "b.n.0": 1.0, "b.n.1": 2.0}  # fmt: skip
        assert resolve(cat, "oth")["id"] == "other-d"  # a unique prefix
        assert resolve(cat, str(root / "fake-a"))["id"] == "fake-a"
        run = resolve(cat, str(other))  # outside the catalog: read from its files
        assert (run["id"], run["family"], run["status"]) == ("fake-zz", "sparsity", "done")
        assert not listed(recipe="fake-zz")
        with pytest.raises(ConfigError, match=r"matches 5 runs: fake-a, fake-b, fake-c, fake-e"):
            resolve(cat, "fake")
        with pytest.raises(ConfigError, match="unknown run 'FAKE-A'"):
            resolve(cat, "FAKE-A")  # names are case-sensitive
