"""The locality recipe [#32]: the √2 grid, the n90 rule, the early stop of a model's sweep,
bad input, and the claim logic on hand-made rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.locality import CONFIRM, Locality, n90, n_grid
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("loc") / "run"
    run_recipe("locality", make_config("locality", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_grid():
    assert n_grid(8, 4096) == [
        8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096
    ]  # fmt: skip
    assert n_grid(5, 5) == [5]


def test_n90_rule():
    assert n90([(8, 0.8), (16, 1.0)]) == pytest.approx(8 * math.sqrt(2))
    assert n90([(8, 0.95), (16, 0.97)]) == 8.0  # at the grid floor
    assert n90([(8, 0.5), (16, 0.85)]) is None  # censored
    # a dip back below 90% moves the crossing to the last rise
    assert n90([(8, 0.92), (16, 0.7), (32, 0.9), (64, 0.99)]) == pytest.approx(32.0)
    assert n90([(8, 0.5), (16, 0.95), (32, 0.8)]) is None


def test_smoke_run_stops_each_sweep_after_confirmation(smoke):
    assert (smoke / "accuracy_vs_n.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(smoke / "summary.json")
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    grid = s["grid"]
    for model in ("cnn", "lcn", "fcn"):
        pts = sorted((c["n"], c["test_acc_mean"]) for c in s["curves"] if c["model"] == model)
        ns = [n for n, _ in pts]
        assert ns == grid[: len(ns)]  # a prefix of the grid
        accs = [a for _, a in pts]
        streaks = [all(a >= 0.9 for a in accs[i - CONFIRM + 1 : i + 1]) for i in range(len(accs))]
        if len(ns) < len(grid):  # stopped early: only right after CONFIRM points >= 90%
            assert streaks[-1] and not any(streaks[:-1][CONFIRM - 1 :])
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units[0].startswith("k2-d4-n")
    assert s["members"] == sum(len(c["test_acc_values"]) for c in s["curves"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"shapes": "4x0"}, "d >= 1"),
        ({"shapes": "4x8,4x8"}, "twice"),
        ({"shapes": "four"}, "k x d"),
        ({"s": 0.0}, "--s"),
        ({"n_min": 64, "n_max": 32}, "increase"),
        ({"data": "mnist1d"}, "dsd"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("locality", smoke=True, **override)
    assert "\n" not in str(e.value)


def _rows(table, floor=()):
    return [
        {
            "k": k,
            "d": d,
            "model": m,
            "n90": v,
            "censored": v is None,
            "at_grid_floor": (k, d, m) in floor,
        }
        for (k, d), vals in table.items()
        for m, v in zip(("cnn", "lcn", "fcn"), vals, strict=True)
    ]


def _verdicts(rows, diverged=()):
    return [c.verdict for c in Locality.check_claims(rows, 4096, list(diverged))]


def test_claims_held():
    rows = _rows({(4, 8): (12.0, 30.0, 60.0), (8, 16): (24.0, 120.0, 400.0)})
    assert _verdicts(rows) == ["held", "held", "held"]


def test_claims_did_not_hold():
    # the measurement at (8, 16): FCN (32-64) below the LCN (64-128); CNN grows 3x
    rows = _rows({(4, 8): (10.0, 30.0, 20.0), (8, 16): (30.0, 90.0, 45.0)})
    assert _verdicts(rows) == ["held", "did not hold", "did not hold"]
    # a censored larger model still orders: CNN 12 < LCN > n_max
    rows = _rows({(4, 8): (12.0, None, None), (8, 16): (20.0, 100.0, 50.0)})
    assert _verdicts(rows)[:2] == ["held", "not tested"]


def test_claims_not_tested():
    rows = _rows({(4, 8): (None, 30.0, 60.0), (8, 16): (24.0, 120.0, 400.0)})
    assert _verdicts(rows) == ["not tested", "held", "not tested"]
    floor = {(4, 8, "cnn"), (4, 8, "lcn")}
    rows = _rows({(4, 8): (8.0, 8.0, 60.0), (8, 16): (24.0, 120.0, 400.0)}, floor)
    assert _verdicts(rows) == ["not tested", "held", "not tested"]
    rows = _rows({(4, 8): (12.0, 30.0, 60.0), (8, 16): (24.0, 120.0, 400.0)})
    assert _verdicts(rows, ["cnn k=4 d=8 n=8 seed 0"]) == ["not tested"] * 3
    rows = _rows({(4, 16): (12.0, 30.0, 60.0)})
    assert _verdicts(rows)[2] == "not tested"
