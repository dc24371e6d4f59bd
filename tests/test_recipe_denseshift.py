"""The denseshift recipe: a smoke run's arms, freezing curves and units, resume, task B
(time reversal), the shared low-variance head, bad input, and the claim logic on hand-made
rows."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.recipes.quant.denseshift import (
    DenseShift,
    DenseShiftConfig,
    head_draw,
    reverse_time,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")

ARMS = [
    "shift_zero",
    "denseshift",
    "denseshift_2bit",
    "fp32",
    "denseshift_ft",
    "fp32_ft",
    "fp32_head",
    "fp32_a_on_b",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ds") / "run"
    run_recipe("denseshift", make_config("denseshift", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_arms_units_and_freezing(smoke):
    assert (smoke / "denseshift.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == [
        "fp32-a",
        "fp32-b",
        "seed-00",
        "seed-01",
    ]
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == ARMS
    by = {r["arm"]: r for r in s["rows"]}
    assert by["shift_zero"]["spec"].startswith("shift_zero3 × minmax × nearest × channel")
    assert by["denseshift"]["spec"].startswith("shift3 × ")
    assert by["denseshift_2bit"]["spec"].startswith("shift2 × ")
    assert by["fp32"]["freezing_curve"] is None
    for arm in ("shift_zero", "denseshift", "denseshift_2bit", "denseshift_ft"):
        curve = by[arm]["freezing_curve"]
        assert len(curve) == 2  # one value per epoch
        assert all(0.0 <= v <= 1.0 for v in curve)  # window 5 < 17 steps per epoch
        assert by[arm]["seeds"] == [0, 1]
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    assert "neither useful to the model capacity" in s["claims"][0]["quote"]
    assert s["setup"]["batch_size"] == 200 and s["setup"]["freezing_window"] == 5


def test_rerun_is_identical_and_a_lost_unit_is_recomputed_alone(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe("denseshift", make_config("denseshift", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_task_b_reverses_every_signal_in_time():
    a = load_dataset("mnist1d", "cpu")
    b = reverse_time(a)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sb.x[:, 0], sa.x[:, -1]) and torch.equal(sb.x[:, -1], sa.x[:, 0])
        assert torch.equal(sb.x.flip(-1), sa.x) and torch.equal(sb.y, sa.y)
    assert b.name == "mnist1d_reversed" and b.num_classes == a.num_classes


def test_the_new_head_is_low_variance_and_shared():
    w, b = head_draw((40, 256, 256, 10), seed=11, gain=0.01)
    w2, _ = head_draw((40, 256, 256, 10), seed=11, gain=0.01)
    assert torch.equal(w, w2) and (b == 0).all() and w.shape == (10, 256)
    assert 0.5 < float(w.std()) / (0.01 / math.sqrt(256)) < 1.5


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="control-bits"):
        DenseShiftConfig(bits=3, control_bits=3)
    with pytest.raises(ConfigError, match="batch-size"):
        DenseShift().validate(DenseShiftConfig(batch_size=5000), {"train": 3500})


def _row(arm, values, diverged=()):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {
        "arm": arm,
        "seeds": list(range(n)),
        "test_acc_values": list(values),
        "test_acc_mean": mean,
        "test_acc_std": std,
        "diverged": list(diverged),
    }


def _rows(b=(60.0, 61, 62, 61, 60), a=(58.0, 59, 60, 59, 58), c=(61.0, 61, 62, 62, 60),
          b2=(50.0, 51, 52, 50, 51), bft=(55.0, 56, 57, 55, 56), cft=(56.0, 56, 57, 56, 56),
          head=(40.0, 41, 40, 42, 41)):  # fmt: skip
    return [
        _row("shift_zero", a),
        _row("denseshift", b),
        _row("denseshift_2bit", b2),
        _row("fp32", c),
        _row("denseshift_ft", bft),
        _row("fp32_ft", cft),
        _row("fp32_head", head),
    ]


def test_claims_hold_on_rows_that_satisfy_them():
    cl = {c.id: c for c in DenseShift.check_claims(_rows(), chance=10.0)}
    assert cl["a"].held is True and cl["a"].evidence["seeds_b_ge_a"] == 5
    assert cl["b"].held is True and cl["b"].evidence["control"]["shows_loss"]
    assert cl["b"].evidence["mean_difference"] == pytest.approx(-0.4)
    assert cl["c"].held is True


def test_claims_fail_without_a_visible_control_or_with_a_large_loss():
    weak = DenseShift.check_claims(_rows(b2=(60.0, 61, 62, 61, 60)), chance=10.0)
    assert weak[1].held is False and not weak[1].evidence["control"]["shows_loss"]
    assert weak[1].evidence["clears_margin"]  # the claim's own CI was fine
    lossy = DenseShift.check_claims(_rows(b=(55.0, 57, 58, 56, 55)), chance=10.0)
    assert lossy[1].held is False and not lossy[1].evidence["clears_margin"]
    assert lossy[0].held is False  # (b) < (a) on the means
    head_fine = DenseShift.check_claims(_rows(head=(56.0, 56, 57, 56, 56)), chance=10.0)
    assert head_fine[2].held is False


def test_claims_not_tested_without_baseline_seeds_or_with_divergence():
    low = DenseShift.check_claims(_rows(c=(12.0, 13, 12, 13, 12)), chance=10.0)
    assert all(c.held is None for c in low)
    one = [_row(r["arm"], r["test_acc_values"][:1]) for r in _rows()]
    res = DenseShift.check_claims(one, chance=10.0)
    assert res[0].held is not None and res[1].held is None and "2 seeds" in res[1].detail
    rows = _rows()
    rows[1]["diverged"] = [3]
    assert DenseShift.check_claims(rows, chance=10.0)[0].held is None
