"""The rs2 recipe: a smoke run's outputs, each arm's data order (RS2 covers the split,
static subsets stay fixed, equal total steps), time to accuracy with the scoring steps
counted, resume of a lost unit, bad input, and the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.probes.rs2 import ARMS, RS2
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rs2") / "run"
    run_recipe("rs2", make_config("rs2", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "rs2_curves.png").read_bytes().startswith(b"\x89PNG")
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == ["scores", "seed-00", "seed-01"]
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == list(ARMS)
    by = {r["arm"]: r for r in s["rows"]}
    # f = 0.3 of 600 examples in whole batches of 50: 150 per round
    assert by["full"]["subset"] == 600 and by["rs2"]["subset"] == 150
    assert by["static-random"]["subset"] == by["static-el2n"]["subset"] == 150
    # RS2 saw every example within its 36 steps (12 rounds); static arms only their subset
    assert by["rs2"]["distinct_seen_mean"] == 600
    assert by["static-random"]["distinct_seen_mean"] == 150
    assert {r["last_step_mean"] for r in s["rows"]} == {36}  # equal total steps
    assert s["scoring_steps"] == 2 * 12  # 2 scoring networks x 1 epoch of 12 steps
    el2n = next(a for a in s["time_to_accuracy"]["arms"] if a["arm"] == "static-el2n")
    assert el2n["selection_steps"] == 24
    c = s["claims"][0]
    assert (
        c["quote"] == "RS2 significantly reduces time-to-accuracy compared to existing techniques"
    )
    assert c["verdict"] in ("held", "did not hold", "not tested")


def test_orders_per_arm():
    cfg = make_config("rs2", smoke=True)
    scores = torch.linspace(0, 1, 600)
    o = RS2().orders(cfg, 600, scores, 0)
    assert set(o) == set(ARMS)
    assert all(order.shape == (36, 50) for _, order, _ in o.values())
    _, rs2, m = o["rs2"]
    flat = rs2.reshape(-1)
    assert sorted(flat[:600].tolist()) == list(range(600))  # every example once first
    assert set(o["static-el2n"][1].reshape(-1).tolist()) == set(range(450, 600))  # hardest
    rnd = set(o["static-random"][1].reshape(-1).tolist())
    assert len(rnd) == m == 150
    assert rnd != set(RS2().orders(cfg, 600, scores, 1)["static-random"][1].reshape(-1).tolist())


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-00.json").unlink()
    run_recipe("rs2", make_config("rs2", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-00"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="exceeds the 18 examples"):
        run_recipe(
            "rs2", make_config("rs2", smoke=True, fraction=0.03, batch_size=50), out=tmp_path / "x"
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--fraction"):
        make_config("rs2", fraction=1.5)


def _row(arm, acc, curve=(), excluded=()):
    return {
        "arm": arm,
        "test_acc_mean": acc,
        "excluded": list(excluded),
        "curve": [{"step": t, "test_acc_mean": a} for t, a in curve],
    }


def test_claims_and_time_to_accuracy_on_hand_made_rows():
    rows = [
        _row("full", 60.0, [(10, 40.0), (20, 58.0), (30, 60.0)]),
        _row("rs2", 57.5, [(10, 45.0), (20, 57.0), (30, 57.5)]),
        _row("static-random", 56.0, [(10, 50.0), (20, 56.0), (30, 55.0)]),
        _row("static-el2n", 40.0, [(10, 57.0), (20, 40.0), (30, 40.0)]),
    ]
    (a,) = RS2.check_claims(rows, chance=10.0)
    assert a.held is True and "+1.50 pts" in a.detail
    tta = RS2.time_to_accuracy(rows, scoring_steps=100)
    assert tta["target_pct"] == pytest.approx(57.0)
    got = {x["arm"]: (x["steps"], x["total_steps"]) for x in tta["arms"]}
    assert got == {
        "full": (20, 20),
        "rs2": (20, 20),
        "static-random": (None, None),
        "static-el2n": (10, 110),
    }
    rows[1]["test_acc_mean"] = 56.5
    assert RS2.check_claims(rows, chance=10.0)[0].held is False
    rows[2]["excluded"] = ["static-random seed 2"]
    assert RS2.check_claims(rows, chance=10.0)[0].held is None
    low = [_row("full", 15.0), _row("rs2", 15.0), _row("static-random", 12.0)]
    (a,) = RS2.check_claims(low, chance=10.0)
    assert a.held is None and "did not learn" in a.detail
