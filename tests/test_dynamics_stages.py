"""The grokking stage detector (row [#27]) on hand-made curves, censoring included."""

import pytest

from weightlab.dynamics.stages import (
    RULE,
    Stages,
    detect_stages,
    first_at_least,
    rule,
)
from weightlab.errors import ConfigError

STEPS = [50, 100, 150, 200, 250, 300]


def test_the_rule_prints_the_thresholds_and_stages():
    assert "train accuracy >= 0.99" in RULE
    assert "median Fourier concentration >= 0.3" in RULE
    assert "test accuracy >= 0.95" in RULE
    assert "lazy = [0, t_mem)" in RULE and "interactive = [t_feat, t_gen]" in RULE
    assert "censored" in RULE
    assert "0.9;" in rule(mem=0.9)


def test_first_at_least_is_inclusive_and_skips_nan():
    assert first_at_least([1, 2, 3], [0.5, float("nan"), 0.99], 0.99) == 3
    assert first_at_least([1, 2, 3], [0.5, 0.6, 0.7], 0.99) is None
    with pytest.raises(ConfigError, match="one value per step"):
        first_at_least([1, 2], [0.5], 0.1)


def test_a_grokking_run_gets_three_ordered_stages():
    train = [0.40, 0.995, 1.0, 1.0, 1.0, 1.0]
    test = [0.01, 0.00, 0.10, 0.60, 0.95, 1.0]
    conc_steps = [0, *STEPS]
    conc = [0.13, 0.13, 0.2, 0.31, 0.5, 0.7, 0.8]
    s = detect_stages(STEPS, train, test, conc_steps, conc)
    assert (s.t_mem, s.t_feat, s.t_gen, s.budget) == (100, 150, 250, 300)
    assert s.ordered and not any(s.censored.values())
    assert s.intervals() == {
        "lazy": (0, 100),
        "independent": (100, 150),
        "interactive": (150, 250),
    }
    d = s.to_dict()
    assert d["intervals"]["interactive"] == [150, 250] and d["ordered"] is True


def test_no_generalization_is_censored_and_leaves_the_last_stage_open():
    train = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    test = [0.0, 0.0, 0.01, 0.02, 0.5, 0.94]
    conc = [0.1, 0.1, 0.1, 0.2, 0.35, 0.4]
    s = detect_stages(STEPS, train, test, STEPS, conc)
    assert (s.t_mem, s.t_feat, s.t_gen) == (100, 250, None)
    assert s.censored == {"t_mem": False, "t_feat": False, "t_gen": True}
    assert not s.ordered
    assert s.intervals()["interactive"] == (250, None)


def test_no_memorization_leaves_later_stages_unstarted():
    s = detect_stages(STEPS, [0.5] * 6, [0.0] * 6, STEPS, [0.1] * 6)
    assert (s.t_mem, s.t_feat, s.t_gen) == (None, None, None)
    assert all(s.censored.values())
    assert s.intervals() == {"lazy": (0, None), "independent": None, "interactive": None}


def test_features_before_memorization_give_an_empty_independent_stage():
    train = [0.5, 0.9, 1.0, 1.0, 1.0, 1.0]
    test = [0.0, 0.2, 0.5, 0.96, 1.0, 1.0]
    conc = [0.31, 0.4, 0.5, 0.5, 0.5, 0.5]
    s = detect_stages(STEPS, train, test, STEPS, conc)
    assert (s.t_mem, s.t_feat, s.t_gen) == (150, 50, 200)
    assert not s.ordered
    assert s.intervals()["independent"] == (150, 150)


def test_same_step_is_not_strictly_ordered():
    assert not Stages(100, 100, 200, 300).ordered
    assert Stages(100, 150, 200, 300).ordered


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="mem threshold must lie in"):
        detect_stages(STEPS, [1] * 6, [1] * 6, STEPS, [1] * 6, mem=1.5)
    with pytest.raises(ConfigError, match="at least one evaluated step"):
        detect_stages([], [], [], [], [])
