"""Recipe dense-hebbian: crossings, claims on hand-made curves, bad input, a tiny run."""

from __future__ import annotations

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.dense_hebbian import (
    DenseHebbianConfig,
    DenseHebbianRecipe,
    last_at_least,
)
from weightlab.recipes.runner import run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_last_at_least_interpolates_the_last_crossing():
    xs = [1.0, 2.0, 3.0, 4.0]
    assert last_at_least(xs, [1.0, 0.95, 0.7, 0.1], 0.9) == pytest.approx(2.2)
    # non-monotone: the last point at or above the level counts
    assert last_at_least(xs, [1.0, 0.5, 0.95, 0.0], 0.9) == pytest.approx(3 + 0.05 / 0.95)
    assert last_at_least(xs, [0.5, 0.4, 0.3, 0.2], 0.9) is None  # never reaches it
    assert last_at_least(xs, [1.0, 1.0, 0.95, 0.92], 0.9) is None  # crossing past the grid


def _rows(n: int, loads: list[float], succ: list[float], ks: list[int]) -> list[dict]:
    return [
        {"n": n, "load": x, "k": k, "success_mean": y}
        for x, y, k in zip(loads, succ, ks, strict=True)
    ]


def test_claims_on_hand_made_curves():
    alphas = [0.004, 0.008, 0.012, 0.016]
    # N = 50: 0.9 at 0.006, 0.5 at 0.010, 0.1 at 0.014 -> width 0.008 / 0.010 = 0.8
    dense = _rows(50, alphas, [1.0, 0.8, 0.2, 0.0], [500, 1000, 1500, 2000])
    # N = 100: K grid 4000..16000, 0.9 crossing at K = 6000
    dense += _rows(100, alphas, [1.0, 0.8, 0.2, 0.0], [4000, 8000, 12000, 16000])
    # N = 150: 0.9 at 0.008 + 0.004 (0.025/0.85), 0.5 at 0.010, 0.1 at 0.008 + 0.004 (0.825/0.85)
    dense += _rows(150, alphas, [1.0, 0.925, 0.075, 0.0], [1, 2, 3, 4])
    pair = _rows(100, [0.08, 0.12, 0.16], [1.0, 0.95, 0.2], [8, 12, 16])
    td, tp = DenseHebbianRecipe.transitions(dense), DenseHebbianRecipe.transitions(pair)
    assert td[0]["relative_width"] == pytest.approx(0.8)
    w150 = 0.004 * 0.8 / 0.85 / 0.010
    assert td[2]["relative_width"] == pytest.approx(w150)
    assert td[1]["k_90"] == pytest.approx(6000)
    assert td[1]["largest_grid_k_90"] == 4000
    assert tp[0]["k_90"] == pytest.approx(12 + 4 * 0.05 / 0.75)
    a, b = DenseHebbianRecipe.check_claims(4, td, tp)
    assert a.held is True and a.evidence["ratio"] == pytest.approx(6000 / (12 + 0.8 / 3))
    assert b.held is True and b.evidence["shrink"] == pytest.approx(1 - w150 / 0.8)
    # a transition that widens fails; one outside the grid is not tested
    td_bad = DenseHebbianRecipe.transitions(
        _rows(50, alphas, [1.0, 0.925, 0.075, 0.0], [1, 2, 3, 4])
        + _rows(150, alphas, [1.0, 0.8, 0.2, 0.0], [1, 2, 3, 4])
    )
    assert DenseHebbianRecipe.check_claims(4, td_bad, tp)[1].held is False
    td_out = DenseHebbianRecipe.transitions(
        _rows(50, alphas, [1.0, 1.0, 0.95, 0.92], [1, 2, 3, 4])
        + _rows(150, alphas, [1.0, 0.8, 0.2, 0.0], [1, 2, 3, 4])
    )
    a2, b2 = DenseHebbianRecipe.check_claims(4, td_out, tp)
    assert a2.held is None and "N = 100" in a2.detail
    assert b2.held is None and "N = 50" in b2.detail
    # a storage ratio below 10 fails
    small = _rows(100, alphas, [1.0, 0.8, 0.2, 0.0], [40, 80, 120, 160])
    a3 = DenseHebbianRecipe.check_claims(4, DenseHebbianRecipe.transitions(small), tp)[0]
    assert a3.held is False


@pytest.mark.parametrize(
    "override, match",
    [
        ({"order": 1}, "P must be an integer >= 2"),
        ({"alphas": "0.01,0.008"}, "increase strictly"),
        ({"loads": "0.1,x"}, "comma-separated numbers"),
        ({"sup_qualities": "0,0.5"}, "positive numbers"),
        ({"sup_qualities": "0.5,1.5"}, r"quality r must lie in \(0, 1\]"),
        ({"sup_examples": "0,4"}, "positive"),
        ({"flip": 1.0}, "--flip"),
        ({"dense_sizes": "50,50"}, "increase strictly"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        DenseHebbianConfig(**override)
    assert "\n" not in str(e.value)


def test_cli_rejects_bad_input_with_exit_code_2_and_writes_nothing(cli, tmp_path):
    rc, _, err = cli("run", "dense-hebbian", "--order", "1", "--out", tmp_path / "r")
    assert rc == 2 and "P must be an integer >= 2" in err
    assert not (tmp_path / "r").exists()


def test_a_tiny_run_retrieves_at_low_load_and_fails_at_high_load(tmp_path):
    cfg = DenseHebbianConfig(
        seeds=2,
        trials=16,
        dense_sizes="24",
        alphas="0.002,0.2",
        pair_sizes="100",
        loads="0.03,0.5",
        sup_n=40,
        sup_k=5,
        sup_examples="1,32",
        sup_qualities="0.5,1",
    )
    _, summary = run_recipe("dense-hebbian", cfg, out=tmp_path / "run")
    for part in ("dense", "pair"):
        low, high = summary[part]
        assert low["success_mean"] == 1.0 and high["success_mean"] < 0.2
    sup = {(r["examples"], r["quality"]): r["success_mean"] for r in summary["supervised"]}
    assert sup[(1, 1.0)] == 1.0 and sup[(32, 1.0)] == 1.0  # clean examples = the archetype
    assert sup[(1, 0.5)] == 0.0  # one example of quality 0.5 is 25% wrong
    assert sup[(32, 0.5)] == 1.0  # the mean of 32 recovers every sign
