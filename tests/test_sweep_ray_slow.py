"""``weightlab sweep --executor ray`` against a real head (``ray start --head --block`` on a
free port), driven by CLI subprocesses: 4 smoke configs batched and ``--no-batch``, the
first run's worker SIGKILLed once its first unit exists, every summary byte-identical to
the local executor's; a head with token authentication refuses the driver (exit 2,
pointing at ``RAY_AUTH_MODE``); ``--address local`` starts and stops a private cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import cli_command, cli_env

pytestmark = pytest.mark.slow

GRID4 = [
    "lottery-ticket",
    *("--grid", "lr=1e-3,2e-3", "--grid", "init=glorot_normal,kaiming_normal"),
    *("--smoke", "--set", "epochs=4"),
]
PAIR = ["lottery-ticket", "--grid", "lr=1e-3,2e-3", "--smoke"]
# before Ray is imported: loopback only (else Ray 2.60 dials the network address), no token
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("WEIGHTLAB_REQUIRE_EXTRAS") == "1":
            pytest.fail("ray is not installed and WEIGHTLAB_REQUIRE_EXTRAS=1")
        pytest.skip("ray is not installed (pip install 'weightlab[ray]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summaries(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(root.glob("*/summary.json"))}


class Head:
    """``ray start --head --block`` in a subprocess, its temp dir private (short, for Ray's
    Unix sockets; not /tmp/ray, whose current-cluster file other sessions read); stopped
    by SIGTERM to its pid."""

    def __init__(self, **env: str) -> None:
        need_ray()
        ray_bin = Path(sys.executable).parent / "ray"
        if not ray_bin.exists():
            pytest.skip(f"no ray command next to {sys.executable}")
        self.tmp = Path(tempfile.mkdtemp(prefix="wlray", dir="/tmp"))
        self.port = _free_port()
        self.env = cli_env(**RAY_ENV, RAY_TMPDIR=str(self.tmp))
        self.env.pop("RAY_ADDRESS", None)
        self.log = open(self.tmp / "head.log", "w")  # noqa: SIM115 - closed in stop()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", "--port", str(self.port)]
            + ["--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
            env={**self.env, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        while time.perf_counter() - t0 < 60:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, (self.tmp / "head.log").read_text()
                time.sleep(0.05)
        else:
            self.stop()
            pytest.fail("the Ray head's port did not open within 60 s")
        self.start_s = time.perf_counter() - t0
        print(f"Ray head on port {self.port}: port open after {self.start_s:.1f} s")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    h = Head()
    yield h
    h.stop()


def _local(args: list[str], root: Path, env: dict) -> None:
    p = subprocess.run(
        cli_command("sweep", *args, "--out", root), env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("batch", [True, False], ids=["batched", "no-batch"])
def test_a_killed_worker_is_retried_and_resumes_to_the_local_summaries(head, tmp_path, batch):
    from weightlab.sweep.plan import plan_sweep
    from weightlab.sweep.spec import spec_from_args

    extra = [] if batch else ["--no-batch"]
    ref, root = tmp_path / "local", tmp_path / "ray"
    _local([*GRID4, *extra], ref, head.env)
    spec = spec_from_args("lottery-ticket", GRID4[2:5:2], ["epochs=4"], None, True, batch=batch)
    plan = plan_sweep(spec, root)
    first = plan.runs[0]
    mates = [plan.runs[i].path for i in dict(plan.groups)[first.group]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cli_command("sweep", *GRID4, *extra, "--executor", "ray", "--address", head.address)
        + ["--out", str(root)],
        env=head.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the first unit of the first run (batched: of every run of its group, one step)
    unit = first.path / "units" / "round-00.json"
    pid = None
    while time.perf_counter() - t0 < 120 and proc.poll() is None:
        if all((p / "units" / "round-00.json").exists() for p in mates):
            try:
                pid = json.loads((first.path / "running.json").read_text())["pid"]
                break
            except (OSError, ValueError):
                pass
        time.sleep(0.01)
    assert pid is not None and pid != proc.pid, "the first run never held its first unit"
    mtime = unit.stat().st_mtime_ns
    os.kill(pid, signal.SIGKILL)  # the Ray worker running the first run's group
    killed = time.time_ns()
    out, err = proc.communicate(timeout=240)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, out + err
    assert out.count(" done in ") == 4, out
    print(f"{'batched' if batch else '--no-batch'}: 4 runs with a kill in {wall:.1f} s")
    assert _summaries(root) == _summaries(ref) and len(_summaries(ref)) == 4
    # the retry resumed: the first unit predates it and was not recomputed
    assert unit.stat().st_mtime_ns == mtime < killed
    computed = json.loads((first.path / "timing.json").read_text())["computed_units"]
    assert "round-00" not in computed and computed[-1] == "round-02"
    assert not (first.path / "running.json").exists()


@pytest.mark.timeout(180)
def test_a_worker_killed_with_no_retry_left_fails_its_group(head, tmp_path):
    from weightlab.sweep.plan import plan_sweep
    from weightlab.sweep.spec import spec_from_args

    root = tmp_path / "ray"
    args = [*PAIR, "--set", "epochs=20"]
    first = plan_sweep(spec_from_args("lottery-ticket", [PAIR[2]], ["epochs=20"], None, True), root)
    first = first.runs[0].path
    proc = subprocess.Popen(
        cli_command("sweep", *args, "--executor", "ray", "--address", head.address)
        + ["--max-retries", "0", "--out", str(root)],
        env=head.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0, pid = time.perf_counter(), None
    while pid is None and time.perf_counter() - t0 < 120 and proc.poll() is None:
        try:
            pid = json.loads((first / "running.json").read_text())["pid"]
        except (OSError, ValueError):
            time.sleep(0.01)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    lost = "FAILED: the Ray task of group g00 was lost (WorkerCrashedError) after 0 retries"
    assert out.count(lost) == 2, out
    with sqlite3.connect(root / "catalog.sqlite") as con:
        assert con.execute("SELECT DISTINCT status FROM runs").fetchall() == [("failed",)]


@pytest.mark.timeout(180)
def test_a_head_with_token_authentication_refuses_the_driver_with_one_line(tmp_path):
    h = Head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    try:
        root = tmp_path / "r"
        env = {**h.env, "HOME": str(tmp_path)}  # no ~/.ray/auth_token either
        env.pop("RAY_AUTH_TOKEN", None)
        t0 = time.perf_counter()
        p = subprocess.run(
            cli_command("sweep", *PAIR, "--executor", "ray", "--address", h.address)
            + ["--out", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        wall = time.perf_counter() - t0
    finally:
        h.stop()
    print(f"refused in {wall:.1f} s (CLI start included)")
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"Ray cluster at {h.address} refused this driver" in p.stderr
    assert "RAY_AUTH_MODE=disabled" in p.stderr
    assert not root.exists()


@pytest.mark.timeout(300)
def test_address_local_starts_and_stops_a_private_cluster(tmp_path):
    need_ray()
    tmp = Path(tempfile.mkdtemp(prefix="wlray", dir="/tmp"))
    try:
        env = cli_env(RAY_TMPDIR=str(tmp))
        env.pop("RAY_ADDRESS", None)
        for k in RAY_ENV:  # the executor sets them for its private cluster
            env.pop(k, None)
        ref, root = tmp_path / "local", tmp_path / "ray"
        _local(PAIR, ref, env)
        t0 = time.perf_counter()
        p = subprocess.run(
            cli_command("sweep", *PAIR, "--executor", "ray", "--address", "local")
            + ["--out", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        print(f"--address local, 2 runs: {time.perf_counter() - t0:.1f} s (CLI start included)")
        assert p.returncode == 0, p.stdout + p.stderr
        assert _summaries(root) == _summaries(ref) and len(_summaries(ref)) == 2
        assert not (tmp / "ray" / "ray_current_cluster").exists()  # not announced to others
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
