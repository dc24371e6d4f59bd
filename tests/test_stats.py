import math

import pytest

from weightlab.recipes.stats import mean_std, paired_difference_ci, within_margin


def test_paired_ci_matches_t_interval():
    # differences -0.1, -0.2, 0.2: mean -1/30, s = 0.2082, t_{0.95, 2} = 2.919986
    m, lo, hi = paired_difference_ci([1, 2, 3], [1.1, 2.2, 2.8], level=0.90)
    _, s = mean_std([-0.1, -0.2, 0.2])
    half = 2.919986 * s / math.sqrt(3)
    assert m == pytest.approx(-1 / 30)
    assert lo == pytest.approx(m - half, rel=1e-5)
    assert hi == pytest.approx(m + half, rel=1e-5)


def test_within_margin_needs_a_tight_interval_and_two_pairs():
    assert within_margin([80.0, 81.0, 79.0], [79.9, 80.9, 79.1], 1.0)[0]
    wide, ev = within_margin([80.0, 81.0, 79.0], [79.5, 80.2, 79.4], 1.0)
    assert not wide and ev["ci_high"] > 1.0
    assert not within_margin([1.0], [1.0], 1.0)[0]  # one seed shows nothing
    with pytest.raises(ValueError):
        paired_difference_ci([1.0, 2.0], [1.0])


def test_still_improving_flags_early_stops_in_the_last_tenth():
    from weightlab.recipes.claims import still_improving

    rows = [
        {"name": "late", "early_stop_mean": 95.0, "last_step_mean": 100.0},
        {"name": "edge", "early_stop_mean": 90.0, "last_step_mean": 100.0},
        {"name": "early", "early_stop_mean": 89.0, "last_step_mean": 100.0},
        {"name": "empty", "early_stop_mean": None, "last_step_mean": 100.0},
        {"name": "nan", "early_stop_mean": float("nan"), "last_step_mean": 100.0},
    ]
    assert still_improving(rows, lambda r: r["name"]) == ["late", "edge"]
