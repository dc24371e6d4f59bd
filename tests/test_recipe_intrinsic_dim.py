"""The intrinsic-dim recipe [#72]: a smoke run's outputs, resume of a lost unit, the d90
interpolation on hand-computed curves, the claim logic on hand-made rows, bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.adapters.intrinsic_dim import IntrinsicDim, d90, n_params, parse_models
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("idim") / "run"
    run_recipe("intrinsic-dim", make_config("intrinsic-dim", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "intrinsic_dim.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == ["seed-00", "seed-01"]
    s = read_json(smoke / "summary.json")
    assert [r["model"] for r in s["rows"]] == ["16", "32x2"]
    assert [r["params"] for r in s["rows"]] == [n_params([64, 16, 10]), n_params([64, 32, 32, 10])]
    assert s["members"] == 2 * 2 * (1 + 3)  # seeds x models x (dense + 3 d)
    assert sorted({c["d"] for c in s["curves"]}) == [4, 16, 64]
    assert {c["id"] for c in s["claims"]} == {"a", "b"}
    assert "varies little across a family of models" in s["claims"][0]["quote"]


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe("intrinsic-dim", make_config("intrinsic-dim", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_d90_interpolates_on_log_d():
    dims = [10, 100, 1000]
    # crossing halfway between 10 and 100 in accuracy -> geometric mean sqrt(1000)
    v, st = d90(dims, [0.2, 0.8, 0.9], 0.5)
    assert st == "ok" and v == pytest.approx(math.sqrt(1000))
    assert d90(dims, [0.6, 0.8, 0.9], 0.5) == (10.0, "below")
    assert d90(dims, [0.1, 0.2, 0.3], 0.5) == (1000.0, "above")
    # exactly on a grid point
    assert d90(dims, [0.2, 0.5, 0.9], 0.5)[0] == pytest.approx(100)


def test_parse_models():
    assert parse_models("50, 400,100x2") == [(50,), (400,), (100, 100)]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"models": "50,x"}, "models"),
        ({"models": "50,50"}, "twice"),
        ({"dims": "10"}, "dims"),
        ({"dims": "25,10"}, "dims"),
        ({"projection": "gauss"}, "projection"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("intrinsic-dim", smoke=True, **override)
    assert "\n" not in str(e.value)


def test_dims_above_a_models_size_is_refused(tmp_path):
    cfg = make_config("intrinsic-dim", smoke=True, models="2", dims="10,2000")
    with pytest.raises(ConfigError, match="exceeds the parameter count of model"):
        run_recipe("intrinsic-dim", cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- claim logic on hand-made rows ---------------------------------------------------------

DIMS = [10, 25, 50, 100, 200, 400, 800]


def _row(
    model,
    params,
    d90_mean,
    status=("ok", "ok", "ok"),
    acc=95.0,
    early=300.0,
    diverged=(),
    sub_acc=94.0,
):
    return {
        "subspace_acc_at_dmax": sub_acc,
        "model": model,
        "params": params,
        "dense_acc_mean": acc,
        "dense_early_stop_mean": early,
        "dense_last_step": 900,
        "d90_mean": d90_mean,
        "d90_status": list(status),
        "diverged": list(diverged),
    }


def _verdicts(rows):
    return {c.id: c for c in IntrinsicDim.check_claims(rows, 10.0, DIMS)}


def test_claims_held_and_did_not_hold():
    v = _verdicts([_row("50", 3760, 200.0), _row("400", 30010, 300.0)])
    assert v["a"].held is True and v["b"].held is True
    v = _verdicts([_row("50", 3760, 100.0), _row("400", 30010, 300.0)])
    assert v["a"].held is False and "3.00" in v["a"].detail
    v = _verdicts([_row("50", 3760, 500.0), _row("400", 30010, 600.0)])
    assert v["a"].held is True and v["b"].held is False and "13.3%" in v["b"].detail


def test_claims_not_tested():
    v = _verdicts([_row("50", 3760, 200.0, acc=12.0), _row("400", 30010, 300.0)])
    assert v["a"].held is None and "did not learn" in v["a"].detail
    v = _verdicts([_row("50", 3760, 200.0, early=880.0), _row("400", 30010, 300.0)])
    assert v["b"].held is None and "still improving" in v["b"].detail
    v = _verdicts([_row("50", 3760, 200.0, diverged=["50 d=10 seed 0"]), _row("400", 30010, 300)])
    assert v["a"].held is None and "diverged" in v["a"].detail
    # censored above the grid: (a) not tested; (b) decided when 800 >= 10% of the params
    v = _verdicts([_row("50", 3760, 800.0, ("above",) * 3), _row("400", 30010, 300.0)])
    assert v["a"].held is None and "outside the d grid" in v["a"].detail
    assert v["b"].held is False
    v = _verdicts([_row("50", 9000, 800.0, ("above",) * 3), _row("400", 30010, 300.0)])
    assert v["b"].held is None


def test_broken_subspace_training_is_not_tested():
    """A subspace arm at chance at the largest d (e.g. a learning rate that breaks it) leaves
    d90 above the grid; neither claim may then read "did not hold"."""
    rows = [
        _row("50", 3760, 800, status=("above",) * 3, sub_acc=14.7),
        _row("100", 7510, 179),
    ]
    v = _verdicts(rows)
    assert v["a"].verdict == "not tested" and v["b"].verdict == "not tested"
    assert "subspace 50 d=800 baseline did not learn" in v["b"].detail
