"""The more-is-better recipe: a smoke run's outputs and determinism, the step rule and the
claims on hand-made rows (held, did not hold, not tested), bad input."""

from __future__ import annotations

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.more_is_better import MoreIsBetter
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "more-is-better"


def test_smoke_run_outputs_and_determinism(tmp_path):
    cfg = make_config(NAME, smoke=True, data="digits")  # MNIST-1D: the conformance test
    run_recipe(NAME, cfg, out=tmp_path / "a")
    run_recipe(NAME, cfg, out=tmp_path / "b")
    a = (tmp_path / "a" / "summary.json").read_bytes()
    assert a == (tmp_path / "b" / "summary.json").read_bytes()
    assert (tmp_path / "a" / "test_mse.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(tmp_path / "a" / "summary.json")
    assert [(r["p"], r["n"]) for r in s["rows"]] == [
        (p, n) for p in (50, 100, 200) for n in (16, 64, 256)
    ]
    assert s["members"] == 2 * 9 and s["seeds"] == 2
    for r in s["rows"]:
        assert len(r["log10_ridge_rel"]) == 2 and r["train_mse_mean"] <= r["test_mse_mean"]
        # the tuned ridge is never worse on test than the smallest one by much (tuned on val)
        assert r["test_mse_mean"] <= 1.5 * r["ridgeless_test_mse_mean"]
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]


def _row(n, p, mse, se, train=None, acc=60.0):
    return {
        "n": n,
        "p": p,
        "test_mse_mean": mse,
        "test_mse_se": se,
        "train_mse_mean": 0.1 * mse if train is None else train,
        "test_acc_mean": acc,
    }


def test_step_rule_and_claims_on_hand_made_rows():
    rows = [_row(n, p, 1.0 / (n * p), 0.01 / (n * p)) for n in (10, 20, 40) for p in (5, 50)]
    a, b, c = MoreIsBetter.check_claims(rows, chance=10.0, seeds=3)
    assert (a.held, b.held, c.held) == (True, True, True)
    # a rise of 0.9 SE is allowed, 1.1 SE is not
    ok = [dict(r) for r in rows]
    by = {(r["n"], r["p"]): r for r in ok}
    by[(20, 5)]["test_mse_mean"] = by[(10, 5)]["test_mse_mean"] + 0.9 * by[(20, 5)]["test_mse_se"]
    assert MoreIsBetter.check_claims(ok, 10.0, 3)[0].held is True
    by[(20, 5)]["test_mse_mean"] = by[(10, 5)]["test_mse_mean"] + 1.1 * by[(10, 5)]["test_mse_se"]
    a = MoreIsBetter.check_claims(ok, 10.0, 3)[0]
    assert a.held is False and "N = 10 to 20 at P = 5" in a.detail
    assert len(a.evidence["violations"]) == 1
    # train error not much below test: (c) fails
    top = [_row(40, 50, 1.0, 0.01, train=0.6)] + rows[:-1]
    assert MoreIsBetter.check_claims(top, 10.0, 3)[2].held is False
    # preconditions: one seed, an unlearned largest model
    a, b, c = MoreIsBetter.check_claims(rows, 10.0, 1)
    assert a.held is None and b.held is None and "one seed" in a.detail and c.held is True
    dumb = [dict(r, test_acc_mean=12.0) for r in rows]
    assert {x.held for x in MoreIsBetter.check_claims(dumb, 10.0, 3)} == {None}


@pytest.mark.parametrize(
    "override, match",
    [
        ({"features": "0,10"}, "--features must be distinct positive"),
        ({"samples": "10,x"}, "--samples must be comma-separated"),
        ({"ridge_min": 1.0, "ridge_max": 0.0}, "--ridge-max 0 is below --ridge-min 1"),
    ],
)
def test_bad_config_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, **override)
    assert "\n" not in str(e.value)


def test_too_many_samples_are_refused_before_the_run(tmp_path):
    cfg = make_config(NAME, smoke=True, samples="50,5000", data="digits")
    with pytest.raises(ConfigError, match="--samples 5000 exceeds the"):
        run_recipe(NAME, cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
