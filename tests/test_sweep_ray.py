"""``weightlab sweep --executor ray`` on one module-scoped private Ray cluster
(``address="local"``, 2 CPUs): summaries byte-identical to the local executor's, a user
error in a task not retried, and the address errors (unreachable, ``auto`` with no
cluster, no ``ray`` package) as one line with exit code 2 and nothing written."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from weightlab.cli import main
from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config
from weightlab.runs.rundir import RunDir, default_run_dir
from weightlab.sweep import ray_executor
from weightlab.sweep.ray_executor import RayContext, check_nodes, check_ray, resolve_address

PAIR = ["lottery-ticket", "--grid", "lr=1e-3,2e-3", "--smoke"]  # two runs, one batch group
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
# the local reference runs with the Ray tasks' thread count (1 CPU per task)
pytestmark = pytest.mark.usefixtures("one_thread")


def need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("WEIGHTLAB_REQUIRE_EXTRAS") == "1":
            pytest.fail("ray is not installed and WEIGHTLAB_REQUIRE_EXTRAS=1")
        pytest.skip("ray is not installed (pip install 'weightlab[ray]')")


@pytest.fixture(scope="module")
def cluster():
    """A private 2-CPU Ray cluster for this module; yields its GCS address."""
    need_ray()
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    for k, v in RAY_ENV.items():  # before Ray is imported: loopback only, no token
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    print(f"private Ray cluster started in {time.perf_counter() - t0:.1f} s")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _summaries(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(root.glob("*/summary.json"))}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_ray_sweep_matches_the_local_summaries_byte_for_byte(
    cluster, tmp_path, capsys, monkeypatch
):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["sweep", *PAIR, "--out", str(local)]) == 0
    monkeypatch.setenv("RAY_ADDRESS", cluster)  # --address auto (the default) reads it
    capsys.readouterr()
    assert main(["sweep", *PAIR, "--executor", "ray", "--out", str(remote)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done in ") == 2, out
    assert len(_summaries(local)) == 2 and _summaries(remote) == _summaries(local)
    assert not list(remote.glob(".weightlab-probe-*"))  # the probe's marker is gone
    # the driver wrote the catalog: both runs done, in the sweep's group
    record = next((remote / "sweeps").glob("*.json"))
    with sqlite3.connect(remote / "catalog.sqlite") as con:
        rows = con.execute("SELECT status, sweep, batch_group FROM runs").fetchall()
    assert rows == [("done", record.stem, "g00")] * 2
    # run directories of other processes: batch.json as the local executor writes it
    for name in _summaries(local):
        assert (remote / name / "batch.json").read_bytes() == (
            local / name / "batch.json"
        ).read_bytes()
    # re-running the finished sweep submits nothing
    assert main(["sweep", *PAIR, "--executor", "ray", "--out", str(remote)]) == 0
    assert capsys.readouterr().out.count("already done") == 2


def test_a_user_error_in_a_run_fails_it_once_and_the_sweep_goes_on(cluster, tmp_path, capsys):
    root = tmp_path / "r"
    # the lr=2e-3 point's directory holds another config's run: RunDir.open raises in the task
    cfg = make_config("lottery-ticket", smoke=True, lr=2e-3)
    path = default_run_dir(root, "lottery-ticket", cfg)
    RunDir(path, "lottery-ticket", make_config("lottery-ticket", smoke=True, lr=3e-3)).open()
    before = (path / "config.json").read_bytes()
    rc = main(["sweep", *PAIR, "--executor", "ray", "--address", cluster, "--out", str(root)])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("FAILED") == 1 and out.count(" done in ") == 1, out
    assert f"{path.name} FAILED: {path} holds a run of 'lottery-ticket' with another config" in out
    assert (path / "config.json").read_bytes() == before
    with sqlite3.connect(root / "catalog.sqlite") as con:
        err = con.execute("SELECT status, error FROM runs WHERE id = ?", (path.name,)).fetchone()
    assert err[0] == "failed" and "with another config" in err[1]


def test_an_exception_in_a_task_is_not_retried(cluster, tmp_path, capsys, monkeypatch):
    attempts = tmp_path / "attempts.txt"

    def failing_task(spec_json, root, gid, indices, names, threads):  # runs in a Ray worker
        with open(attempts, "a") as f:
            f.write(f"{gid}\n")
        raise ConfigError("a user error in the task")

    monkeypatch.setattr(ray_executor, "GROUP_TASK", failing_task)
    root = tmp_path / "r"
    rc = main(
        ["sweep", *PAIR, "--executor", "ray", "--address", cluster, "--max-retries", "3"]
        + ["--out", str(root)]
    )
    out = capsys.readouterr().out
    assert rc == 1
    reason = "FAILED: the Ray task of group g00 raised a user error in the task (not retried)"
    assert out.count(reason) == 2, out
    assert attempts.read_text() == "g00\n"  # attempted once despite --max-retries 3


def test_reproduce_on_ray_submits_every_recipe_before_waiting(
    cluster, tmp_path, capsys, monkeypatch
):
    """``reproduce --executor ray`` submits every recipe's task before awaiting any: each
    task waits (up to 60 s) until the other one has started too, which only happens when
    both are pending at once on the 2-CPU cluster; then it runs its recipe for real."""
    from weightlab.sweep import reproduce

    marks = tmp_path / "started"
    marks.mkdir()
    real_task = ray_executor.run_group_task

    def both_at_once(spec_json, root, gid, indices, names, threads):  # in a Ray worker
        import time as _time
        from pathlib import Path as _Path

        (_Path(marks) / names[0]).touch()
        t0 = _time.monotonic()
        while len(list(_Path(marks).iterdir())) < 2:
            if _time.monotonic() - t0 > 60:
                raise RuntimeError("the other recipe's task never started alongside this one")
            _time.sleep(0.05)
        return real_task(spec_json, root, gid, indices, names, threads)

    monkeypatch.setattr(ray_executor, "GROUP_TASK", both_at_once)
    pair = ["lottery-ticket", "random-pruning"]
    monkeypatch.setattr(reproduce, "selected_recipes", lambda all_, family: pair)
    root = tmp_path / "r"
    rc = main(
        ["reproduce", "--all", "--smoke", "--executor", "ray", "--address", cluster]
        + ["--out", str(root)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count(" done in ") == 2 and "[2/2]" in out, out
    assert len(list(marks.iterdir())) == 2
    with sqlite3.connect(root / "catalog.sqlite") as con:
        rows = con.execute("SELECT recipe, status FROM runs ORDER BY recipe").fetchall()
    assert rows == [(name, "done") for name in pair]
    assert (root / "site" / "index.html").exists()
    # resumed: nothing left to submit
    assert (
        main(
            ["reproduce", "--all", "--smoke", "--executor", "ray", "--address", cluster]
            + ["--out", str(root)]
        )
        == 0
    )
    assert capsys.readouterr().out.count("already done") == 2


def test_a_node_running_another_weightlab_is_named(cluster, tmp_path, monkeypatch):
    import weightlab

    real = weightlab.__version__  # what the node's worker imports
    monkeypatch.setattr(weightlab, "__version__", "0.0.0-driver")
    ctx = RayContext(cluster, "--address")
    root = tmp_path / "new"
    with pytest.raises(ConfigError) as e:
        check_nodes(ctx, root)
    assert re.fullmatch(
        rf"Ray node \w+ \(\S+\) runs weightlab {re.escape(real)}, this driver 0\.0\.0-driver; "
        "install the same version on every node",
        str(e.value),
    ), str(e.value)
    assert not root.exists()  # the marker and the folder made for it are removed


def test_a_cluster_without_the_resources_a_task_asks_for_is_refused(cluster, tmp_path):
    root = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"has 3 CPU\(s\) for a task \(most: 2\)"):
        check_nodes(RayContext(cluster, "--address", cpus_per_task=3), root)
    with pytest.raises(ConfigError, match="has a GPU and 1 CPU"):
        check_nodes(RayContext(cluster, "--address"), root, gpu=True)
    assert not root.exists()


def test_an_unreachable_address_exits_2_within_5_s_and_writes_nothing(tmp_path, capsys):
    need_ray()
    port = _closed_port()
    root = tmp_path / "r"
    t0 = time.perf_counter()
    rc = main(
        ["sweep", *PAIR, "--executor", "ray", "--address", f"127.0.0.1:{port}", "--out", str(root)]
    )
    assert time.perf_counter() - t0 < 5.0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"Ray cluster at 127.0.0.1:{port} is unreachable (connection refused)" in err
    assert not root.exists()
    for bad in ("nonsense", "ray://127.0.0.1:10001"):
        assert main(["sweep", *PAIR, "--executor", "ray", "--address", bad]) == 2
        assert "HOST:PORT" in capsys.readouterr().err


def test_auto_finds_ray_address_then_the_current_cluster_file_else_exits_2(
    tmp_path, capsys, monkeypatch
):
    need_ray()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))  # no current-cluster file
    root = tmp_path / "r"
    assert main(["sweep", *PAIR, "--executor", "ray", "--out", str(root)]) == 2
    assert capsys.readouterr().err.strip() == (
        "weightlab: error: no Ray cluster found (auto): set RAY_ADDRESS or pass "
        "--address HOST:PORT or --address local"
    )
    assert not root.exists()
    # the file `ray start` writes, here naming a stale head
    port = _closed_port()
    f = tmp_path / "raytmp" / "ray" / "ray_current_cluster"
    f.parent.mkdir(parents=True)
    f.write_text(f"127.0.0.1:{port}\n")
    assert resolve_address("auto") == (f"127.0.0.1:{port}", f"from {f}")
    assert main(["sweep", *PAIR, "--executor", "ray", "--out", str(root)]) == 2
    assert f"127.0.0.1:{port} (from {f}) is unreachable" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # RAY_ADDRESS comes first
    assert resolve_address(None) == ("10.0.0.1:6379", "from RAY_ADDRESS")
    assert resolve_address("local") == ("local", "local")
    assert not root.exists()


def test_missing_ray_is_one_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'weightlab\[ray\]'"):
        check_ray({"executor": "ray", "address": "local"})
    root = tmp_path / "r"
    assert main(["sweep", *PAIR, "--executor", "ray", "--out", str(root)]) == 2
    assert capsys.readouterr().err.strip() == (
        "weightlab: error: --executor ray needs the ray package: pip install 'weightlab[ray]'"
    )
    assert not root.exists()


def test_record_and_options(tmp_path):
    """The sweep record names the runs the tasks plan (the group plan agrees with the
    driver's), and a wrong run name is refused in the task."""
    from weightlab.sweep.plan import plan_sweep
    from weightlab.sweep.spec import spec_from_args

    spec = spec_from_args("lottery-ticket", ["lr=1e-3,2e-3"], [], None, True)
    plan = plan_sweep(spec, tmp_path)
    gid, idx = plan.groups[0]
    names = [plan.runs[i].name for i in idx]
    sub = ray_executor.group_plan(spec.to_json(), str(tmp_path), gid, idx, names)
    assert [r.name for r in sub.runs] == names and sub.groups == [(gid, [0, 1])]
    assert [r.cfg for r in sub.runs] == [plan.runs[i].cfg for i in idx]
    with pytest.raises(Exception, match="install the same weightlab on every node"):
        ray_executor.group_plan(spec.to_json(), str(tmp_path), gid, idx, names[::-1])
    assert json.loads(json.dumps(spec.to_json())) == spec.to_json()
