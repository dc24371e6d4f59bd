"""``weightlab sweep``: spec parsing and bad input, batch groups, batched against config by
config, resume after SIGKILL and after a group step killed between unit writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weightlab.cli import main
from weightlab.recipes.registry import get_recipe
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.sweep.plan import batch_groups, plan_sweep
from weightlab.sweep.spec import spec_from_args, spec_from_toml

GRID = ["--grid", "lr=1e-3,2e-3", "--grid", "init=glorot_normal,kaiming_normal", "--smoke"]
PAIR = ["--grid", "lr=1e-3,2e-3", "--smoke"]  # two runs, one batch group


def _summaries(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(root.glob("*/summary.json"))}


def test_grid_is_the_product_in_order_with_typed_values():
    spec = spec_from_args(
        "lottery-ticket", ["lr=1e-3,2e-3", "epochs=2,3"], ["hidden=20,10"], 2, True
    )
    assert spec.points() == [
        {"lr": 1e-3, "epochs": 2},
        {"lr": 1e-3, "epochs": 3},
        {"lr": 2e-3, "epochs": 2},
        {"lr": 2e-3, "epochs": 3},
    ]
    assert dict(spec.set) == {"hidden": "20,10"}  # --set keeps commas
    assert (
        spec.id
        == spec_from_args(
            "lottery-ticket", ["lr=1e-3,2e-3", "epochs=2,3"], ["hidden=20,10"], 2, True
        ).id
    )


def test_the_record_keeps_the_grid_order(tmp_path):
    from weightlab.runs.files import atomic_write_json, read_json
    from weightlab.sweep.spec import SweepSpec

    spec = spec_from_args("lottery-ticket", ["rate=0.2,0.5", "lr=1e-3,2e-3"], [], None, True)
    atomic_write_json(tmp_path / "r.json", spec.to_json())  # sorted keys on disk
    back = SweepSpec.from_json(read_json(tmp_path / "r.json", "record"))
    assert back == spec and back.id == spec.id and back.points() == spec.points()
    other = spec_from_args("lottery-ticket", ["lr=1e-3,2e-3", "rate=0.2,0.5"], [], None, True)
    assert other.id != spec.id  # another product order is another sweep


def test_toml_file_gives_the_same_spec(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(
        'recipe = "lottery-ticket"\nseeds = 2\nsmoke = true\n[set]\nhidden = "20,10"\n'
        "[grid]\nlr = [1e-3, 2e-3]\nepochs = [2, 3]\n"
    )
    spec, out = spec_from_toml(f)
    assert out is None
    assert spec == spec_from_args(
        "lottery-ticket", ["lr=1e-3,2e-3", "epochs=2,3"], ["hidden=20,10"], 2, True
    )


def test_groups_join_runs_differing_only_in_member_fields_up_to_the_cap():
    recipe = get_recipe("lottery-ticket")
    cfgs = [
        make_config("lottery-ticket", smoke=True, lr=lr, rate=rate, seeds=2)
        for rate in (0.2, 0.5)
        for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)
    ]
    groups = batch_groups(recipe, cfgs, batch=True, cap=24)  # 6 members per run: 4 per group
    assert [idx for _, idx in groups] == [[0, 1, 2, 3], [4], [5, 6, 7, 8], [9]]
    assert [g for g, _ in groups] == ["g00", "g01", "g02", "g03"]
    assert [idx for _, idx in batch_groups(recipe, cfgs, batch=False, cap=24)] == [
        [i] for i in range(10)
    ]
    big = [make_config("lottery-ticket", smoke=True, lr=lr, seeds=8) for lr in (1e-3, 2e-3)]
    assert [idx for _, idx in batch_groups(recipe, big, True, 24)] == [[0], [1]]  # 24 alone


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--grid", "width=1,2"],
            "is not a config field of recipe 'lottery-ticket'; its fields: seeds",
        ),
        (["--grid", "lr=1e-3,abc"], "--grid lr expects float, got 'abc'"),
        (["--grid", "lr=1e-3,20"], "grid point lr=20.0: --lr must be <= 10"),
        (["--grid", "lr=1e-3", "--set", "lr=2e-3"], "key 'lr' is given twice"),
        (["--grid", "lr="], "--grid lr= has no values"),
        (["--grid", "lr=1e-3,1e-3"], "lists a value twice"),
        ([], "a sweep needs at least one --grid"),
        (["--grid", "lr=1e-3", "--address", "auto"], "apply to --executor ray only"),
        (["--grid", "epochs=1", "--set", "batch_size=100000"], "grid point epochs=1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    root = tmp_path / "root"
    assert main(["sweep", "lottery-ticket", *args, "--smoke", "--out", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not root.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ('recipe = "lottery-ticket"\n[grid]\nlr = [1e-3, @]\n', "is not valid TOML"),
        ('recipe = "lottery-ticket"\nsweep = 1\n[grid]\nlr = [1e-3]\n', "unknown key(s) sweep"),
        ('recipe = "lottery-ticket"\n[grid]\nlr = []\n', "must be a non-empty list"),
        ('recipe = "lottery-ticket"\n[grid]\nlr = ["x"]\n', "[grid] lr expects float"),
        ('recipe = "lottery-ticket"\n[executor]\nnodes = 3\n', "unknown [executor] key(s) nodes"),
    ],
)
def test_bad_sweep_files(tmp_path, capsys, text, message):
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert main(["sweep", str(f), "--out", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "root").exists()
    if "TOML" in message:
        assert "line 3" in err


def test_dry_run_lists_runs_groups_and_what_exists(tmp_path, capsys):
    root = tmp_path / "r"
    assert main(["sweep", "lottery-ticket", *GRID, "--out", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s) in 1 group(s)" in out and out.count("[new]") == 4
    assert not root.exists()


def test_batched_sweep_matches_config_by_config_and_reruns_byte_identical(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["sweep", "lottery-ticket", *GRID, "--out", str(a)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done in ") == 4, out
    assert main(["sweep", "lottery-ticket", *GRID, "--out", str(b)]) == 0
    assert main(["sweep", "lottery-ticket", *GRID, "--out", str(c), "--no-batch"]) == 0
    sa, sb, sc = _summaries(a), _summaries(b), _summaries(c)
    assert len(sa) == 4 and sa == sb  # the same batched sweep twice: byte-identical
    for name in sa:  # batched and alone agree on every verdict
        va = [x["verdict"] for x in json.loads(sa[name])["claims"]]
        vc = [x["verdict"] for x in json.loads(sc[name])["claims"]]
        assert va == vc
    # the record and each run's batch group
    spec = spec_from_args("lottery-ticket", GRID[1:4:2], [], None, True)
    record = json.loads((a / "sweeps" / f"{spec.id}.json").read_text())
    assert record["groups"] == [
        {"id": "g00", "runs": sorted(sa, key=[r["run"] for r in record["runs"]].index)}
    ]
    batch = json.loads((a / record["runs"][0]["run"] / "batch.json").read_text())
    assert batch["group"] == "g00" and len(batch["group_runs"]) == 4
    # every point is an ordinary run: `weightlab run` of its config finds it, computes nothing
    cfg = make_config("lottery-ticket", smoke=True, lr=2e-3, init="kaiming_normal")
    path, _ = run_recipe("lottery-ticket", cfg, root=a)
    assert (
        path.parent == a and json.loads((path / "timing.json").read_text())["computed_units"] == []
    )
    # a finished sweep re-run computes nothing
    capsys.readouterr()
    assert main(["sweep", "lottery-ticket", *GRID, "--out", str(a)]) == 0
    assert capsys.readouterr().out.count("already done") == 4


def test_a_group_step_killed_between_unit_writes_resumes_with_the_whole_group(tmp_path):
    root, ref = tmp_path / "r", tmp_path / "ref"
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(ref)]) == 0
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(root)]) == 0
    runs = sorted(p for p in root.iterdir() if p.name.startswith("lottery"))
    # as if killed after run 0 wrote its round-01 unit and before the others did
    for p in runs:
        (p / "summary.json").unlink()
        for k in ("round-02",) + (() if p == runs[0] else ("round-01",)):
            (p / "units" / f"{k}.json").unlink()
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(root)]) == 0
    assert _summaries(root) == _summaries(ref)
    computed = json.loads((runs[0] / "timing.json").read_text())["computed_units"]
    assert computed == ["round-01", "round-02"]  # run 0 retrained round 1 with its group


def test_a_failed_run_is_marked_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    from weightlab.recipes.sparsity.lottery_ticket import LotteryTicket

    real = LotteryTicket.run

    def run(self, cfg, rd, progress=False):
        if cfg.lr == 2e-3:
            raise RuntimeError("boom")
        return real(self, cfg, rd, progress)

    monkeypatch.setattr(LotteryTicket, "run", run)
    root = tmp_path / "r"
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(root)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED: RuntimeError: boom") == 1 and out.count(" done in ") == 1, out
    assert len(_summaries(root)) == 1


@pytest.mark.timeout(120)
def test_sigkill_of_a_sweep_then_rerun_gives_the_uninterrupted_summaries(tmp_path):
    ref, root = tmp_path / "ref", tmp_path / "r"
    args = ["lottery-ticket", "--grid", "lr=1e-3,2e-3", "--smoke", "--set", "epochs=4"]
    assert main(["sweep", *args, "--out", str(ref)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "weightlab", "sweep", *args, "--out", str(root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(root.glob("*/units/round-01.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _summaries(root)  # killed midway
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert _summaries(root) == _summaries(ref)


def test_plan_checks_every_point_before_writing(tmp_path):
    spec = spec_from_args("lottery-ticket", ["lr=1e-3,2e-3"], [], None, True)
    plan = plan_sweep(spec, tmp_path / "x")
    assert [r.name for r in plan.runs] == sorted(
        {r.name for r in plan.runs}, key=[r.name for r in plan.runs].index
    )
    assert not (tmp_path / "x").exists()


def test_sweep_logs_each_finished_run_once_and_refuses_a_missing_extra(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    root = tmp_path / "r"
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(root), "--log", "tensorboard"]) == 0
    logged = sorted(p for p in (root / "tensorboard").iterdir())
    assert [p.name for p in logged] == sorted(p.parent.name for p in root.glob("*/summary.json"))
    files = {f: f.stat().st_mtime_ns for p in logged for f in p.iterdir()}
    assert files
    # the same sweep again: every run already done and already logged, nothing new
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(root), "--log", "tensorboard"]) == 0
    assert {f: f.stat().st_mtime_ns for p in logged for f in p.iterdir()} == files
    # a missing extra is a one-line error before anything is written
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a)
    )
    other = tmp_path / "o"
    assert main(["sweep", "lottery-ticket", *PAIR, "--out", str(other), "--log", "mlflow"]) == 2
    assert not other.exists()
