"""Optional MLflow / TensorBoard logging of finished runs (weightlab.tracking).

A real lottery-ticket smoke run (the session's ``smoke_run``) is logged into both
backends and read back with their own readers (``MlflowClient.get_metric_history``,
tags, artifacts; TensorBoard's ``EventAccumulator``); logging it again writes nothing.
The extras' tests skip when the package is missing unless WEIGHTLAB_REQUIRE_EXTRAS=1.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weightlab.errors import ConfigError, RunFileError
from weightlab.tracking import check_logger, log_finished_run
from weightlab.tracking.records import clean_key, line_points, read_run

RUN = "lottery-ticket-smoke"


def need(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        if os.environ.get("WEIGHTLAB_REQUIRE_EXTRAS") == "1":
            pytest.fail(f"{package} is not installed and WEIGHTLAB_REQUIRE_EXTRAS=1")
        pytest.skip(f"{package} is not installed (pip install 'weightlab[{package}]')")


@pytest.fixture(scope="module")
def root(smoke_run, tmp_path_factory) -> Path:
    """A ROOT holding a copy of the smoke run as ``lottery-ticket-smoke``."""
    root = tmp_path_factory.mktemp("tracking")
    shutil.copytree(smoke_run, root / RUN)
    return root


@pytest.fixture(scope="module")
def summary(root) -> dict:
    return json.loads((root / RUN / "summary.json").read_text())


def history(root: Path) -> list[dict]:
    """Member 0's history in the first unit of metrics.jsonl."""
    first = json.loads((root / RUN / "metrics.jsonl").read_text().splitlines()[0])
    return first["unit"], first["members"][0]["history"]


# -- check_logger ----------------------------------------------------------------------


def test_check_logger_accepts_none_and_rejects_unknown(tmp_path):
    check_logger(None, root=tmp_path)
    with pytest.raises(ConfigError, match="--log 'wandb' is not a logger; choose one of"):
        check_logger("wandb", root=tmp_path)
    with pytest.raises(ConfigError, match="--mlflow-uri needs --log mlflow"):
        check_logger(None, root=tmp_path, uri="sqlite:///x.db")
    with pytest.raises(ConfigError, match="--mlflow-uri applies to --log mlflow"):
        check_logger("tensorboard", root=tmp_path, uri="sqlite:///x.db")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["mlflow", "tensorboard"])
def test_check_logger_without_extra(kind, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == kind else real(name, *a)
    )
    with pytest.raises(ConfigError) as e:
        check_logger(kind, root=tmp_path)
    assert str(e.value) == (
        f"--log {kind} needs the {kind} package: pip install 'weightlab[{kind}]'"
    )
    with pytest.raises(ConfigError):
        log_finished_run(kind, tmp_path / RUN, root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_check_logger_imports_no_extra():
    code = (
        "import sys; from pathlib import Path; from weightlab.tracking import check_logger;"
        "[check_logger(k, root=Path('.')) for k in ('mlflow', 'tensorboard') "
        " if __import__('importlib').util.find_spec(k)];"
        "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("runs/mlflow.db", "is not an MLflow tracking URI; give one such as sqlite:///PATH"),
        ("ftp://host/x", "is not an MLflow tracking URI"),
        ("file:///tmp/mlruns", "is a file store, which MLflow 3 refuses unless"),
    ],
)
def test_check_logger_bad_mlflow_uri(uri, message, tmp_path, monkeypatch):
    need("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=message):
        check_logger("mlflow", root=tmp_path, uri=uri)
    check_logger("mlflow", root=tmp_path, uri="http://127.0.0.1:5000")
    check_logger("mlflow", root=tmp_path, uri="postgresql+psycopg2://u@h/db")


def test_check_logger_mlflow_skinny(tmp_path, monkeypatch):
    """mlflow-skinny has no SQLAlchemy: a database store is refused, a server is not."""
    need("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "sqlalchemy" else real(n, *a)
    )
    with pytest.raises(ConfigError, match="with a sqlite store needs sqlalchemy .mlflow-skinny"):
        check_logger("mlflow", root=tmp_path)
    check_logger("mlflow", root=tmp_path, uri="http://127.0.0.1:5000")


# -- records ---------------------------------------------------------------------------


def test_line_points_hand_made():
    line = {
        "unit": "r/0",
        "round": 2,
        "ok": True,
        "gone": None,
        "bad": float("nan"),
        "a/b": 1.5,
        "losses": [3.0, 2.0],
        "members": [
            {"seed": 0, "history": [{"step": 5, "acc": 0.5}, {"step": 10, "acc": 0.75}]},
        ],
        "probes": [{"step": 0, "w": {"norm": 2.0}}],
        "names": ["x", 1],
    }
    assert list(line_points(line, 3)) == [
        ("units/round", 2.0, 3),
        ("units/a_b", 1.5, 3),
        ("units/r_0/losses", 3.0, 0),
        ("units/r_0/losses", 2.0, 1),
        ("units/members.0.seed", 0.0, 3),
        ("units/r_0/members.0.history.acc", 0.5, 5),
        ("units/r_0/members.0.history.acc", 0.75, 10),
        ("units/r_0/probes.w.norm", 2.0, 0),
        ("units/names.1", 1.0, 3),
    ]
    assert clean_key("a b:c/d.e-f_g") == "a b:c/d.e-f_g"
    assert clean_key("x[0]=1") == "x_0__1"
    long = clean_key("k" * 300)
    assert len(long) == 250 and long != clean_key("k" * 301)


def test_read_run_of_smoke_run(root, summary):
    run = read_run(root / RUN)
    assert run.run_id == RUN and run.recipe == "lottery-ticket"
    assert run.summary_metrics == summary["metrics"]
    assert run.verdicts == {c["id"]: c["verdict"] for c in summary["claims"]}
    unit, hist = history(root)
    key = f"units/{unit}/members.0.history.test_acc"
    assert [(v, s) for k, v, s in run.points if k == key] == [
        (h["test_acc"], h["step"]) for h in hist
    ]
    assert run.last_step == max(s for _, _, s in run.points) > 0
    assert {p.name for p in run.artifacts} >= {"report.md", "summary.json"}
    assert run.sweep is None and "weightlab.sweep" not in run.tags()


def test_read_run_of_a_sweep_run(root, tmp_path):
    shutil.copytree(root / RUN, tmp_path / RUN)
    batch = {"sweep": "abc123", "group": "g01", "group_runs": [RUN]}
    (tmp_path / RUN / "batch.json").write_text(json.dumps(batch))
    tags = read_run(tmp_path / RUN).tags()
    assert (tags["weightlab.sweep"], tags["weightlab.batch_group"]) == ("abc123", "g01")


def test_unfinished_run_is_refused(root, tmp_path):
    shutil.copytree(root / RUN, tmp_path / "half")
    (tmp_path / "half" / "summary.json").unlink()
    with pytest.raises(RunFileError, match="has no summary.json: the run has not finished"):
        read_run(tmp_path / "half")


# -- MLflow ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_client(root):
    """The smoke run logged once into ROOT/mlflow.db; yields (client, first result)."""
    need("mlflow")
    saved = os.environ.get("MLFLOW_DISABLE_TELEMETRY")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no network attempts from tests
    first = log_finished_run("mlflow", root / RUN, root=root)
    from mlflow.tracking import MlflowClient

    yield MlflowClient(tracking_uri=f"sqlite:///{root.absolute()}/mlflow.db"), first
    if saved is None:
        os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)
    else:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = saved


def mlflow_runs(client, run_id: str = RUN):
    exp = client.get_experiment_by_name("lottery-ticket")
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`weightlab.run_id` = '{run_id}'"
    )


def test_mlflow_reads_back(mlflow_client, root, summary):
    client, first = mlflow_client
    assert first is True
    (mrun,) = mlflow_runs(client)
    assert mrun.info.run_name == RUN and mrun.info.status == "FINISHED"
    config = json.loads((root / RUN / "config.json").read_text())["config"]
    assert mrun.data.params == {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()
    }
    for c in summary["claims"]:
        assert mrun.data.tags[f"claim.{c['id']}"] == c["verdict"]
    rid = mrun.info.run_id
    last = read_run(root / RUN).last_step
    for name, value in summary["metrics"].items():
        (m,) = client.get_metric_history(rid, name)
        assert math.isclose(m.value, value) and m.step == last
    unit, hist = history(root)
    got = client.get_metric_history(rid, f"units/{unit}/members.0.history.val_loss")
    assert sorted((m.step, m.value) for m in got) == [(h["step"], h["val_loss"]) for h in hist]
    rounds = client.get_metric_history(rid, "units/members.0.final_test_acc")
    lines = (root / RUN / "metrics.jsonl").read_text().splitlines()
    assert sorted((m.step, m.value) for m in rounds) == [
        (i, json.loads(t)["members"][0]["final_test_acc"]) for i, t in enumerate(lines)
    ]
    arts = {a.path for a in client.list_artifacts(rid)}
    assert {"report.md", "summary.json"} <= arts
    assert (root / "mlflow-artifacts").is_dir() and not Path("mlruns").exists()


def test_mlflow_logs_once(mlflow_client, root):
    client, _ = mlflow_client
    (mrun,) = mlflow_runs(client)
    before = len(client.get_metric_history(mrun.info.run_id, "units/members.0.test_acc"))
    assert log_finished_run("mlflow", root / RUN, root=root) is False
    (again,) = mlflow_runs(client)
    assert again.info.run_id == mrun.info.run_id
    assert len(client.get_metric_history(mrun.info.run_id, "units/members.0.test_acc")) == before


def test_mlflow_relogs_a_killed_logger(mlflow_client, root):
    """An MLflow run left unfinished (a killed logger) is deleted and logged anew."""
    client, _ = mlflow_client
    shutil.copytree(root / RUN, root / "lottery-ticket-killed")
    exp = client.get_experiment_by_name("lottery-ticket")
    half = client.create_run(exp.experiment_id, tags={"weightlab.run_id": "lottery-ticket-killed"})
    assert log_finished_run("mlflow", root / "lottery-ticket-killed", root=root) is True
    (done,) = mlflow_runs(client, "lottery-ticket-killed")
    assert done.info.run_id != half.info.run_id and done.info.status == "FINISHED"
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"


@pytest.mark.parametrize("name", ["it's a run", 'say "it\'s"'])
def test_mlflow_run_names_with_quotes(mlflow_client, root, name):
    shutil.copytree(root / RUN, root / name)
    assert log_finished_run("mlflow", root / name, root=root) is True
    assert log_finished_run("mlflow", root / name, root=root) is False
    client, _ = mlflow_client
    exp = client.get_experiment_by_name("lottery-ticket")
    tagged = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags["weightlab.run_id"] == name
    ]
    assert len(tagged) == 1 and tagged[0].info.run_name == name


def test_mlflow_store_error_is_one_line(mlflow_client, root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=f"could not log {RUN} to sqlite:.*check --mlflow-uri"):
        log_finished_run("mlflow", root / RUN, root=root, uri=f"sqlite:///{blocker}/x.db")


# -- TensorBoard -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tb_events(root):
    need("tensorboard")
    first = log_finished_run("tensorboard", root / RUN, root=root)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(root / "tensorboard" / RUN), size_guidance={"scalars": 0})
    acc.Reload()
    return acc, first


def test_tensorboard_reads_back(tb_events, root, summary):
    acc, first = tb_events
    assert first is True
    tags = acc.Tags()
    last = read_run(root / RUN).last_step
    for name, value in summary["metrics"].items():
        (e,) = acc.Scalars(name)
        assert math.isclose(e.value, value, rel_tol=1e-6) and e.step == last
    unit, hist = history(root)
    got = acc.Scalars(f"units/{unit}/members.0.history.test_acc")
    assert [(e.step, round(e.value, 6)) for e in got] == [
        (h["step"], round(h["test_acc"], 6)) for h in hist
    ]
    assert len(tags["scalars"]) == len({k for k, _, _ in read_run(root / RUN).points}) + len(
        summary["metrics"]
    )
    assert {"config/text_summary", "claims/text_summary"} <= set(tags["tensors"])
    assert not [p for p in (root / "tensorboard").iterdir() if p.name.startswith(".")]


def test_tensorboard_logs_once(tb_events, root):
    d = root / "tensorboard" / RUN
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert log_finished_run("tensorboard", root / RUN, root=root) is False
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


def test_tensorboard_temp_dir_of_killed_logger(tb_events, root):
    """A killed logger's temporary directory does not count as logged and is removed."""
    shutil.copytree(root / RUN, root / "lottery-ticket-tb")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = root / "tensorboard" / f".lottery-ticket-tb.tmp-{dead}"
    stale.mkdir()
    (stale / "events.out.tfevents.0.half").write_bytes(b"")
    assert log_finished_run("tensorboard", root / "lottery-ticket-tb", root=root) is True
    assert not stale.exists()
    assert any(
        p.name.startswith("events.out")
        for p in (root / "tensorboard" / "lottery-ticket-tb").iterdir()
    )


@pytest.mark.slow
def test_logging_is_quiet_and_stays_under_root(root, tmp_path):
    """A fresh MLflow database (its creation logs INFO lines unless silenced) and a
    TensorBoard log from a relative ROOT print nothing and write only under ROOT."""
    need("mlflow")
    need("tensorboard")
    shutil.copytree(root / RUN, tmp_path / "runs" / RUN)
    code = (
        "from pathlib import Path; from weightlab.tracking import log_finished_run;"
        "r = Path('runs');"
        f"assert log_finished_run('mlflow', r / '{RUN}', root=r);"
        f"assert log_finished_run('tensorboard', r / '{RUN}', root=r)"
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "default"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert (out.stdout, out.stderr) == ("", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        RUN,
        "mlflow-artifacts",
        "mlflow.db",
        "tensorboard",
    ]
