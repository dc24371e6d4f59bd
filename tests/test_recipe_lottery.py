"""The lottery-ticket recipe end to end: outputs, masks, determinism, resume after SIGKILL,
re-runs, report regeneration, and the claim checks on hand-made numbers."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import SMOKE_ARGS, cli_command, cli_env, run_cli_in, temp_files, unit_mtimes

from weightlab.cli import main
from weightlab.recipes.runner import make_config
from weightlab.recipes.sparsity.lottery_ticket import (
    LOW_DENSITY,
    MATCH_DENSITY,
    LotteryTicket,
)
from weightlab.runs import load_tensors, read_json

VERDICTS = {"held", "did not hold", "not tested"}
SEEDS = (0, 1)
# --smoke on MNIST-1D: MLP 40-64-32-10; hidden layers lose 50% per round, the output layer 25%.
SHAPES = {"layers.0.weight": (64, 40), "layers.1.weight": (32, 64), "layers.2.weight": (10, 32)}
KEEP = {  # exact surviving weights per layer after each round
    0: {"layers.0.weight": 2560, "layers.1.weight": 2048, "layers.2.weight": 320},
    1: {"layers.0.weight": 1280, "layers.1.weight": 1024, "layers.2.weight": 240},
    2: {"layers.0.weight": 640, "layers.1.weight": 512, "layers.2.weight": 180},
}
TOTAL = 2560 + 2048 + 320

ENGINES_SLOW_LOOP = [
    pytest.param("population", id="population"),
    pytest.param("loop", id="loop", marks=pytest.mark.slow),
]


def _engine_args(engine: str) -> list[str]:
    return [] if engine == "population" else ["--engine", engine]


@pytest.fixture(scope="session")
def loop_run(tmp_path_factory, weightlab_cache) -> Path:
    """A finished smoke run with the plain-loop engine. Do not modify it."""
    root = tmp_path_factory.mktemp("smoke-loop")
    res = run_cli_in(root, *SMOKE_ARGS, "--engine", "loop", "--out", root / "run")
    assert res.rc == 0, res.stderr
    return root / "run"


@pytest.fixture
def reference(request, smoke_run):
    """The uninterrupted run for an engine."""

    def get(engine: str) -> Path:
        return smoke_run if engine == "population" else request.getfixturevalue("loop_run")

    return get


# -- (1) a smoke run's outputs ------------------------------------------------------------


@pytest.mark.parametrize("engine", ["population", "loop"])
def test_smoke_run_outputs(engine, reference):
    run = reference(engine)
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == [
        "accuracy_vs_density.png",
        "config.json",
        "metrics.jsonl",
        "report.html",
        "report.md",
        "summary.json",
        "timing.json",
        "units/round-00.json",
        "units/round-00.safetensors",
        "units/round-01.json",
        "units/round-01.safetensors",
        "units/round-02.json",
        "units/round-02.safetensors",
    ]
    # config.json: the full smoke config and exactly the non-default fields
    cfg = make_config("lottery-ticket", smoke=True, engine=engine)
    rec = read_json(run / "config.json")
    assert rec["recipe"] == "lottery-ticket"
    assert rec["config"] == json.loads(json.dumps(asdict(cfg)))
    expected_nd = dict(
        LotteryTicket.smoke, **({"engine": engine} if engine != "population" else {})
    )
    assert rec["non_default"] == expected_nd

    # metrics.jsonl: one line per unit, with every member
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["unit"] for x in lines] == ["round-00", "round-01", "round-02"]
    assert [len(x["members"]) for x in lines] == [2, 6, 6]
    for x in lines:
        for m in x["members"]:
            assert len(m["history"]) == 2  # one evaluation per epoch, 2 epochs
            assert m["diverged"] is False
            assert 0.0 <= m["test_acc"] <= 1.0
            best = min(m["history"], key=lambda p: (p["val_loss"], p["step"]))
            assert m["early_stop_step"] == best["step"] and m["test_acc"] == best["test_acc"]

    # summary.json: dense + three arms per pruned round, over 2 seeds
    s = read_json(run / "summary.json")
    assert s["recipe"] == "lottery-ticket"
    assert [(r["round"], r["arm"]) for r in s["rows"]] == [
        (0, "dense"),
        (1, "ticket"),
        (1, "reinit"),
        (1, "random"),
        (2, "ticket"),
        (2, "reinit"),
        (2, "random"),
    ]
    assert s["members"] == 14 and s["diverged_members"] == []
    for r in s["rows"]:
        assert r["n"] == 2 and r["diverged"] == 0 and r["excluded"] == []
        assert r["last_step_mean"] == 116  # 2 epochs of 58 steps
        expect = sum(KEEP[r["round"]].values()) / TOTAL
        assert r["density"] == pytest.approx(expect, abs=1e-12)
        vals = r["test_acc_values"]
        assert len(vals) == 2 and all(0 <= v <= 100 for v in vals)
        assert r["test_acc_mean"] == pytest.approx(sum(vals) / 2)
        assert r["test_acc_std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)
    # the rows agree with the members they summarize
    for r in s["rows"]:
        arm = "ticket" if r["arm"] == "dense" else r["arm"]
        members = [m for m in lines[r["round"]]["members"] if m["arm"] == arm]
        assert sorted(m["seed"] for m in members) == list(SEEDS)
        by_seed = {m["seed"]: 100 * m["test_acc"] for m in members}
        assert r["test_acc_values"] == pytest.approx([by_seed[0], by_seed[1]])
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    for c in s["claims"]:
        assert c["verdict"] in VERDICTS
        assert c["verdict"] == {True: "held", False: "did not hold", None: "not tested"}[c["held"]]
        assert c["quote"] and c["statement"] and c["detail"]
    # smoke never reaches 10% density, so (b) cannot be tested; dense learns (well above
    # chance), so (a) is tested; in 2 epochs dense early-stops at its last evaluation, so
    # (c) cannot be judged (it would hold trivially)
    assert s["chance_pct"] == pytest.approx(100 * 0.1, abs=3)
    assert s["claims"][1]["verdict"] == "not tested"
    assert s["claims"][0]["verdict"] != "not tested"
    assert s["claims"][2]["verdict"] == "not tested"
    assert "last evaluation (116)" in s["claims"][2]["detail"]

    # report.md / report.html / PNG
    md = (run / "report.md").read_text()
    for c in s["claims"]:
        assert f"**({c['id']}) {c['verdict'].upper()}**" in md
    assert "![" in md and "accuracy_vs_density.png" in md
    png = (run / "accuracy_vs_density.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    html = (run / "report.html").read_text()
    m = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert m, "report.html must embed the figure"
    assert base64.b64decode(m.group(1)) == png
    assert "<table>" in html and "ticket" in html


@pytest.mark.parametrize("engine", ["population", "loop"])
def test_smoke_run_masks_and_weights(engine, reference):
    run = reference(engine)
    units = [load_tensors(run / "units" / f"round-{r:02d}.safetensors") for r in range(3)]
    for r, t in enumerate(units):
        for s in SEEDS:
            for n, shape in SHAPES.items():
                mask = t[f"ticket.{s}.mask.{n}"]
                final = t[f"ticket.{s}.final.{n}"]
                assert mask.dtype == torch.bool and tuple(mask.shape) == shape
                assert final.dtype == torch.float32 and tuple(final.shape) == shape
                assert int(mask.sum()) == KEEP[r][n], (r, s, n)
                # pruned weights stay exactly zero through training
                assert torch.all(final[~mask] == 0), (r, s, n)
                assert torch.all(final[mask] != 0)
                if r == 0:
                    assert f"random.{s}.mask.{n}" not in t
                    continue
                prev_mask = units[r - 1][f"ticket.{s}.mask.{n}"]
                prev_final = units[r - 1][f"ticket.{s}.final.{n}"]
                # masks are nested across rounds
                assert torch.all(mask <= prev_mask), (r, s, n)
                # IMP keeps the largest-magnitude survivors of the previous round
                kept = prev_final[mask].abs()
                dropped = prev_final[prev_mask & ~mask].abs()
                assert kept.min() >= dropped.max(), (r, s, n)
                # the random-mask control has the ticket's layer-wise counts, other positions
                rnd = t[f"random.{s}.mask.{n}"]
                assert rnd.dtype == torch.bool and int(rnd.sum()) == KEEP[r][n]
                assert not torch.equal(rnd, mask)
        # different seeds give different tickets
        assert not torch.equal(
            t["ticket.0.final.layers.0.weight"], t["ticket.1.final.layers.0.weight"]
        )


# -- (2) determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES_SLOW_LOOP)
def test_same_command_twice_gives_identical_summary(engine, reference, run_cli, tmp_path):
    res = run_cli(*SMOKE_ARGS, *_engine_args(engine), "--out", tmp_path / "again")
    assert res.rc == 0, res.stderr
    ref = reference(engine)
    assert (tmp_path / "again" / "summary.json").read_bytes() == (ref / "summary.json").read_bytes()
    assert (tmp_path / "again" / "metrics.jsonl").read_bytes() == (
        ref / "metrics.jsonl"
    ).read_bytes()
    for r in range(3):
        name = f"round-{r:02d}.safetensors"
        a = load_tensors(tmp_path / "again" / "units" / name)
        b = load_tensors(ref / "units" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # stdout reports the claims and where the run is
    assert "Claims:" in res.stdout and f"Run directory: {tmp_path / 'again'}" in res.stdout


# -- (3) resume after SIGKILL -------------------------------------------------------------------


def _start(run: Path, cwd: Path, engine: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(*SMOKE_ARGS, *_engine_args(engine), "--out", run),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, (
            f"the run exited (rc {proc.returncode}) before {path.name} appeared"
        )
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.mark.parametrize("engine", ENGINES_SLOW_LOOP)
@pytest.mark.parametrize("when", ["after-first-unit", "during-first-unit"])
def test_resume_after_sigkill_matches_uninterrupted_run(engine, when, reference, tmp_path):
    run = tmp_path / "run"
    proc = _start(run, tmp_path, engine)
    try:
        if when == "after-first-unit":
            _wait_for(run / "units" / "round-00.json", proc)
        else:
            _wait_for(run / "config.json", proc)
            # the data is loaded and checked before config.json is written; round 0
            # (2 dense members) then trains for a few tenths of a second
            time.sleep(0.05)
        _kill9(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (run / "summary.json").exists()
    done_before = sorted(p.name for p in (run / "units").glob("*.json"))
    assert "round-02.json" not in done_before
    res = run_cli_in(tmp_path, *SMOKE_ARGS, *_engine_args(engine), "--out", run)
    assert res.rc == 0, res.stderr
    ref = reference(engine)
    assert (run / "summary.json").read_bytes() == (ref / "summary.json").read_bytes(), done_before
    assert (run / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert temp_files(run) == []
    assert sorted(p.name for p in (run / "units").iterdir()) == sorted(
        p.name for p in (ref / "units").iterdir()
    )


# -- (4) re-running a finished run; re-rendering the report --------------------------------------


def test_rerun_of_finished_run_recomputes_nothing_and_rerenders_report(
    copy_run, run_cli, smoke_run
):
    run = copy_run()
    units = unit_mtimes(run)
    for name in ("report.md", "report.html", "accuracy_vs_density.png"):
        (run / name).unlink()
    res = run_cli(*SMOKE_ARGS, "--out", run)
    assert res.rc == 0, res.stderr
    assert unit_mtimes(run) == units
    assert (run / "summary.json").read_bytes() == (smoke_run / "summary.json").read_bytes()
    assert (run / "report.md").read_bytes() == (smoke_run / "report.md").read_bytes()
    assert "data:image/png;base64," in (run / "report.html").read_text()
    assert (run / "accuracy_vs_density.png").read_bytes().startswith(b"\x89PNG")
    assert temp_files(run) == []


def test_report_command_regenerates_deleted_reports(copy_run, smoke_run, capsys):
    run = copy_run()
    for name in ("report.md", "report.html", "accuracy_vs_density.png"):
        (run / name).unlink()
    assert main(["report", str(run)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(run / "report.md"),
        str(run / "report.html"),
        str(run / "accuracy_vs_density.png"),
    ]
    assert (run / "report.md").read_bytes() == (smoke_run / "report.md").read_bytes()
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert html.count("<tr>") == 1 + 7  # header + 7 summary rows


def test_report_reflects_summary_edits(copy_run):
    """The report is a function of summary.json: change a verdict, re-render, see it."""
    run = copy_run()
    s = json.loads((run / "summary.json").read_text())
    s["claims"][1].update(held=True, verdict="held", detail="edited for the test")
    (run / "summary.json").write_text(json.dumps(s))
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "**(b) HELD**" in md and "edited for the test" in md


# -- (5) the claim checks ----------------------------------------------------------------------


CHANCE = 10.0  # balanced 10-class test split, in percent


def _row(round_, arm, density, acc, es=100.0, excluded=()):
    return {
        "round": round_,
        "arm": arm,
        "density": density,
        "test_acc_mean": acc,
        "early_stop_mean": es,
        "last_step_mean": 1000.0,
        "excluded": list(excluded),
    }


def _rows(dense=(90.0, 100.0), **by_density):
    """dense=(acc, es); by_density: 'r1'=(density, ticket_acc, reinit_acc, ticket_es)..."""
    rows = [_row(0, "dense", 1.0, *dense)]
    for i, (d, t, ri, es) in enumerate(by_density.values(), start=1):
        rows += [
            _row(i, "ticket", d, t, es),
            _row(i, "reinit", d, ri, 200.0),
            _row(i, "random", d, ri, 200.0),
        ]
    return rows


def _verdicts(rows, chance=CHANCE):
    return {c.id: c for c in LotteryTicket.check_claims(rows, chance)}


def test_claims_all_held():
    c = _verdicts(
        _rows(r1=(0.5, 91.0, 80.0, 90.0), r2=(0.2, 89.0, 80.0, 100.0), r3=(0.05, 85.0, 80.0, 300.0))
    )
    assert {k: v.verdict for k, v in c.items()} == {"a": "held", "b": "held", "c": "held"}
    # (a) evidence: gaps for exactly the tickets at density >= 20%, 89 - 90 = -1 is within tolerance
    assert [g["density"] for g in c["a"].evidence["gaps"]] == [0.5, 0.2]
    assert [g["gap_pts"] for g in c["a"].evidence["gaps"]] == pytest.approx([1.0, -1.0])
    assert "-1.00 pts at 20.0%" in c["a"].detail
    # (b) evidence: only the 5% ticket is "low density"
    assert c["b"].evidence["gaps"] == [
        {"density": 0.05, "ticket": 85.0, "reinit": 80.0, "gap_pts": 5.0}
    ]
    # (c) the 5% ticket learns slower but is below 20%, so it does not count
    assert c["c"].evidence["tickets"] == [
        {"density": 0.5, "early_stop": 90.0},
        {"density": 0.2, "early_stop": 100.0},
    ]
    assert all(isinstance(v.quote, str) and len(v.quote) > 40 for v in c.values())


def test_claims_did_not_hold():
    c = _verdicts(
        _rows(r1=(0.5, 91.0, 80.0, 90.0), r2=(0.25, 88.9, 80.0, 101.0), r3=(0.1, 85.0, 83.0, 50.0))
    )
    assert {k: v.verdict for k, v in c.items()} == {
        "a": "did not hold",
        "b": "did not hold",
        "c": "did not hold",
    }
    assert c["a"].held is False and "-1.10 pts at 25.0%" in c["a"].detail
    # a gap of exactly 2 pts is not "more than 2"
    assert c["b"].evidence["gaps"][0]["gap_pts"] == pytest.approx(2.0)
    assert "1/2 no later" in c["c"].detail and "latest 101" in c["c"].detail


def test_claims_not_tested_when_densities_are_out_of_range():
    # only mid densities: nothing <= 10% -> (b) untested
    c = _verdicts(_rows(r1=(0.5, 91.0, 80.0, 90.0)))
    assert {k: v.verdict for k, v in c.items()} == {"a": "held", "b": "not tested", "c": "held"}
    assert c["b"].held is None
    assert c["b"].evidence == {"not_tested_because": [c["b"].detail]}
    assert f"{LOW_DENSITY:.0%}" in c["b"].detail
    # only very sparse tickets: nothing >= 20% -> (a) and (c) untested, (b) tested
    c = _verdicts(_rows(r1=(0.15, 70.0, 80.0, 90.0), r2=(0.08, 60.0, 61.0, 90.0)))
    assert {k: v.verdict for k, v in c.items()} == {
        "a": "not tested",
        "b": "did not hold",
        "c": "not tested",
    }
    assert f"{MATCH_DENSITY:.0%}" in c["a"].detail
    assert list(c["a"].evidence) == ["not_tested_because"]
    # dense only
    c = _verdicts(_rows())
    assert {v.verdict for v in c.values()} == {"not tested"}


def test_claim_results_serialize():
    c = LotteryTicket.check_claims(_rows(r1=(0.05, 85.0, 80.0, 90.0)), CHANCE)
    d = [x.to_dict() for x in c]
    assert [x["verdict"] for x in d] == ["not tested", "held", "not tested"]
    assert json.loads(json.dumps(d)) == d


# -- (6) digits -------------------------------------------------------------------------------


def test_digits_smoke_run(run_cli, tmp_path):
    run = tmp_path / "digits"
    res = run_cli(*SMOKE_ARGS, "--data", "digits", "--out", run)
    assert res.rc == 0, res.stderr
    assert read_json(run / "config.json")["non_default"]["data"] == "digits"
    t = load_tensors(run / "units" / "round-00.safetensors")
    assert tuple(t["ticket.0.final.layers.0.weight"].shape) == (64, 64)  # 64 pixels in
    assert tuple(t["ticket.0.final.layers.2.weight"].shape) == (10, 32)
    s = read_json(run / "summary.json")
    assert [r["arm"] for r in s["rows"]] == [
        "dense",
        "ticket",
        "reinit",
        "random",
        "ticket",
        "reinit",
        "random",
    ]
    dense = s["rows"][0]
    # two epochs of Adam on digits are far above chance (10%)
    assert dense["test_acc_mean"] > 50.0
    assert {c["verdict"] for c in s["claims"]} <= VERDICTS


# -- (7) claim preconditions (defect 1) and diverged members (defect 2) -------------------------


def test_claims_not_tested_when_dense_did_not_learn():
    rows = _rows(dense=(19.9, 100.0), r1=(0.5, 19.5, 10.0, 90.0), r2=(0.05, 19.0, 10.0, 90.0))
    c = _verdicts(rows, chance=10.0)
    assert {v.verdict for v in c.values()} == {"not tested"}
    for v in c.values():
        assert "did not learn" in v.detail and "19.9%" in v.detail and "10.0%" in v.detail
    # exactly 10 pts above chance is enough
    rows[0]["test_acc_mean"] = 20.0
    assert _verdicts(rows, chance=10.0)["a"].verdict != "not tested"
    # chance is the test split's majority-class rate, e.g. 62.7% on breast cancer
    assert _verdicts(rows, chance=62.7)["a"].verdict == "not tested"


def test_claims_not_tested_when_a_member_they_read_diverged():
    rows = _rows(r1=(0.5, 91.0, 80.0, 90.0), r2=(0.05, 85.0, 80.0, 90.0))
    rows[1]["excluded"] = ["ticket seed 1 at 50.0% (diverged at step 40)"]  # (a), (c) read it
    c = _verdicts(rows)
    assert c["a"].verdict == "not tested" and c["c"].verdict == "not tested"
    assert "ticket seed 1 at 50.0% (diverged at step 40)" in c["a"].detail
    assert c["b"].verdict == "held"  # (b) reads only the 5% rows
    rows[1]["excluded"] = []
    rows[5]["excluded"] = ["reinit seed 0 at 5.0% (diverged)"]  # the reinit arm at 5%
    c = _verdicts(rows)
    assert c["b"].verdict == "not tested" and "reinit seed 0" in c["b"].detail
    assert c["a"].verdict == "held" and c["c"].verdict == "held"


def test_claim_c_not_tested_when_dense_stops_at_its_last_evaluation():
    rows = _rows(dense=(90.0, 1000.0), r1=(0.5, 91.0, 80.0, 1000.0))
    c = _verdicts(rows)
    assert c["a"].verdict == "held"
    assert c["c"].verdict == "not tested" and "last evaluation" in c["c"].detail


def _member(round_, arm, seed, acc, diverged=False, step=100):
    return {
        "round": round_,
        "arm": arm,
        "seed": seed,
        "density": {0: 1.0, 1: 0.5}[round_],
        "diverged": diverged,
        "diverged_step": 40 if diverged else None,
        "early_stop_step": step,
        "last_step": 200,
        "test_acc": acc,
        "val_loss": 0.5,
        "final_test_acc": acc,
        "history": [],
    }


def test_diverged_members_are_left_out_of_means_and_named():
    records = [
        _member(0, "ticket", 0, 0.80),
        _member(0, "ticket", 1, 0.90),
        _member(0, "ticket", 2, 0.10, diverged=True),
        *[_member(1, arm, s, 0.85) for arm in ("ticket", "reinit", "random") for s in (0, 1, 2)],
    ]
    cfg = make_config("lottery-ticket", smoke=True)
    s = LotteryTicket().summarize(cfg, records, chance=10.0)
    dense = s["rows"][0]
    assert dense["n"] == 2 and dense["diverged"] == 1
    assert dense["test_acc_mean"] == pytest.approx(85.0)  # (80 + 90) / 2, not 60
    assert dense["excluded"] == ["dense seed 2 at 100.0% (diverged at step 40)"]
    # seed 2's later members were pruned from the diverged ticket: left out as well
    ticket = s["rows"][1]
    assert ticket["n"] == 2 and ticket["diverged"] == 0
    assert ticket["excluded"] == ["ticket seed 2 at 50.0% (pruned from a diverged ticket)"]
    assert s["members"] == 12 and s["diverged_members"] == ["dense seed 2 at 100.0%"]
    a = s["claims"][0]
    assert a["verdict"] == "not tested" and "dense seed 2" in a["detail"]


def test_lr_10_on_digits_claims_nothing(cli, tmp_path):
    """Defect 1: at lr 10 every arm sits near chance; no claim may read "held"."""
    rc, out, err = cli(*SMOKE_ARGS, "--data", "digits", "--lr", "10", "--out", tmp_path / "r")
    assert rc == 0, err
    s = read_json(tmp_path / "r" / "summary.json")
    assert [c["verdict"] for c in s["claims"]] == ["not tested"] * 3
    assert "did not learn" in s["claims"][0]["detail"]
    chance = s["chance_pct"]
    assert 10.0 <= chance <= 15.0  # digits' test split: majority class rate
    assert out.splitlines()[-1].startswith("Diverged members: ")


# -- (8) plan_imp and --rewind-step (defect 3) ----------------------------------------------------


def test_plan_imp_matches_density_schedule_and_checks_the_rewind_step():
    from weightlab.errors import ConfigError
    from weightlab.sparsity import IMPConfig, density_schedule, layer_rates
    from weightlab.sparsity.imp import plan_imp

    shapes = {n: torch.Size(s) for n, s in SHAPES.items()}
    imp = IMPConfig(rate=0.5, rate_overrides={"last": 0.25}, target_density=0.3, rewind=116)
    plan = plan_imp(shapes, imp, total_steps=116)
    assert plan.densities == density_schedule(shapes, imp)
    assert plan.densities == pytest.approx([sum(KEEP[r].values()) / TOTAL for r in range(3)])
    assert plan.rates == layer_rates(list(shapes), 0.5, {"last": 0.25})
    assert plan.rates["layers.2.weight"] == 0.25 and plan.rounds == 2
    assert plan.rewind_step == 116  # the last step is allowed
    with pytest.raises(ConfigError, match=r"rewind step 117 is past the end.*0\.\.116"):
        plan_imp(shapes, IMPConfig(rewind=117), total_steps=116)
    with pytest.raises(ConfigError, match="total_steps"):
        plan_imp(shapes, imp, total_steps=0)


def test_iterative_magnitude_pruning_rejects_a_rewind_step_before_training():
    from weightlab.data import load_dataset
    from weightlab.errors import ConfigError
    from weightlab.models import MLP
    from weightlab.models.factory import model_factory
    from weightlab.sparsity import IMPConfig, iterative_magnitude_pruning
    from weightlab.train import OptimConfig, TrainConfig

    calls = []

    def train_fn(*a, **k):
        calls.append(1)
        raise AssertionError("must not train")

    data = load_dataset("digits")
    with pytest.raises(ConfigError, match="rewind step 1000 is past the end"):
        iterative_magnitude_pruning(
            model_factory(MLP, [64, 8, 10]),
            data,
            TrainConfig(1, 100, 0, OptimConfig("adam", lr=1e-3)),
            IMPConfig(rewind=1000),
            seed=0,
            train_fn=train_fn,
        )
    assert calls == []


def test_rewind_step_past_the_end_writes_nothing_and_the_corrected_run_works(cli, tmp_path):
    out = tmp_path / "r"
    rc, _, err = cli(*SMOKE_ARGS, "--rewind-step", "117", "--out", out)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "--rewind-step 117 is past the end" in err and "0..116" in err
    assert not out.exists()
    rc, _, err = cli(*SMOKE_ARGS, "--rewind-step", "116", "--out", out)
    assert rc == 0, err
    t = load_tensors(out / "units" / "round-00.safetensors")
    assert "rewind.0.layers.0.weight" in t


def test_malformed_unit_file_is_one_line_error_naming_it(cli, copy_run):
    run = copy_run()
    (run / "summary.json").unlink()
    unit = run / "units" / "round-01.json"
    rec = json.loads(unit.read_text())
    del rec["metrics"]["members"]
    unit.write_text(json.dumps(rec))
    rc, _, err = cli(*SMOKE_ARGS, "--out", run)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(unit) in err and "no 'members'" in err and "delete it and re-run" in err
    # following the advice recovers the run
    unit.unlink()
    rc, _, err = cli(*SMOKE_ARGS, "--out", run)
    assert rc == 0, err


def test_schedule_flags_reach_the_run_hash_and_are_checked(cli, tmp_path):
    from weightlab.runs import config_hash

    a = make_config("lottery-ticket", smoke=True)
    b = make_config("lottery-ticket", smoke=True, schedule="cosine", warmup_steps=10)
    assert config_hash("lottery-ticket", a) != config_hash("lottery-ticket", b)
    rc, _, err = cli(*SMOKE_ARGS, "--warmup-steps", "1000", "--out", tmp_path / "w")
    assert rc == 2 and "warm-up of 1000 steps" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_a_diverging_run_completes_and_counts_its_diverged_members(cli, tmp_path):
    """Defect 2: plain SGD at lr 10 diverges (non-finite loss) for some members: the run
    completes, they are left out and named, and the last line and the report count them."""
    out = tmp_path / "r"
    rc, stdout, err = cli(*SMOKE_ARGS, "--optimizer", "sgd", "--lr", "10", "--out", out)
    assert rc == 0, err
    s = read_json(out / "summary.json")
    diverged = s["diverged_members"]
    assert diverged, "expected at least one member to diverge at SGD lr 10"
    last = stdout.splitlines()[-1]
    assert last.startswith(f"Diverged members: {len(diverged)} of {s['members']} (")
    assert all(name in last for name in diverged)
    assert f"Diverged members: {len(diverged)} of {s['members']}" in (out / "report.md").read_text()
    assert sum(r["diverged"] for r in s["rows"]) == len(diverged)
    assert {c["verdict"] for c in s["claims"]} == {"not tested"}
    for r in s["rows"]:
        assert r["n"] + len(r["excluded"]) == 2
        assert len(r["test_acc_values"]) == r["n"]  # means over the members kept only
