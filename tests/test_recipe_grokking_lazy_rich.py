"""Recipe grokking-lazy-rich (methods row [#39]): delay rule, censoring, claims, config."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.init.grokking_lazy_rich import (
    MAX_RATIO,
    GrokkingConfig,
    GrokkingLazyRich,
    first_reach,
    member_delay,
    parse_alphas,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.stats import mean_std


def _row(alpha, delays, censored=None, not_fit=(), diverged=()):
    censored = list(censored or [False] * len(delays))
    m, s = mean_std(delays)
    return {
        "alpha": alpha,
        "delays": list(delays),
        "censored": censored,
        "n_censored": sum(censored),
        "all_censored": all(censored),
        "delay_mean": m,
        "delay_std": s,
        "not_fit": list(not_fit),
        "diverged": list(diverged),
    }


def test_first_reach_and_censored_delay():
    assert first_reach([0, 5, 10, 15], [1.0, 0.2, 0.09, 0.01], 0.1) == 10
    assert first_reach([0, 5], [1.0, 0.5], 0.1) is None
    assert member_delay(40, 80, 3000) == (40.0, False)
    assert member_delay(40, None, 3000) == (2960.0, True)  # censored at the budget
    assert member_delay(None, None, 3000) == (None, True)


def test_claims_hold_on_rising_delays():
    rows = [
        _row(a, [d] * 3) for a, d in zip([0.5, 1, 2, 4, 8], [10, 50, 200, 400, 900], strict=True)
    ]
    c1, c2 = GrokkingLazyRich.check_claims(rows)
    assert c1.held is True and c2.held is True
    assert c2.evidence["ratio"] == pytest.approx(10 / 900)


def test_claim_1_fails_on_a_fall_and_on_pairs_censored_at_both_alphas():
    rows = [_row(a, [d] * 3) for a, d in zip([0.5, 1, 2], [10, 300, 200], strict=True)]
    c1, _ = GrokkingLazyRich.check_claims(rows)
    assert c1.held is False and "no rise at 1->2" in c1.detail
    # censored tail: budget 3000, t_train grows with alpha so B - t_train falls; unresolved
    cens = [True] * 3
    rows = [
        _row(0.5, [40, 40, 40]),
        _row(1, [2880] * 3, cens),
        _row(2, [2840] * 3, cens),
        _row(4, [2680] * 3, cens),
    ]
    c1, c2 = GrokkingLazyRich.check_claims(rows)
    assert c1.held is False and "unresolved" in c1.detail and "1-2" in c1.detail
    assert c2.held is True
    # partly censored at the larger alpha with a lower mean: a fall, not a tie
    rows = [
        _row(0.5, [40] * 3),
        _row(1, [2880] * 3, cens),
        _row(2, [100, 2840, 2840], [False, True, True]),
    ]
    c1, _ = GrokkingLazyRich.check_claims(rows)
    assert c1.held is False


def test_claim_2_ratio_threshold_and_censored_smallest_alpha():
    rows = [_row(0.5, [101] * 3), _row(2, [500] * 3), _row(8, [1000] * 3)]
    _, c2 = GrokkingLazyRich.check_claims(rows)
    assert MAX_RATIO == 0.10 and c2.held is False  # 0.101 > 0.10
    rows[0] = _row(0.5, [100] * 3)
    _, c2 = GrokkingLazyRich.check_claims(rows)
    assert c2.held is True
    rows[0] = _row(0.5, [50] * 3, [True, False, False])
    _, c2 = GrokkingLazyRich.check_claims(rows)
    assert c2.held is False and "cannot pass" in c2.detail


def test_no_fit_or_divergence_makes_claims_not_tested():
    rows = [_row(a, [d] * 3) for a, d in zip([0.5, 1, 2], [10, 50, 200], strict=True)]
    rows[2] = _row(2, [200] * 3, not_fit=["α=2 seed 0"])
    c1, c2 = GrokkingLazyRich.check_claims(rows)
    assert c1.held is None and "no fit" in c1.detail and c2.held is None
    rows[2] = _row(2, [200] * 3)
    rows[0] = _row(0.5, [10] * 3, diverged=["α=0.5 seed 1"])
    c1, c2 = GrokkingLazyRich.check_claims(rows)
    assert c1.held is None and "diverged" in c1.detail and c2.held is None
    c1, _ = GrokkingLazyRich.check_claims([_row(1, [5]), _row(2, [9])])
    assert c1.held is None and "fewer than 3" in c1.detail


def test_config_errors_are_one_line():
    for bad in ("0.5,x", "0,1", "-1,2", "2,2", ""):
        with pytest.raises(ConfigError, match="alphas") as e:
            GrokkingConfig(alphas=bad)
        assert "\n" not in str(e.value)
    assert parse_alphas("8,0.5,2") == [0.5, 2.0, 8.0]
    with pytest.raises(ConfigError, match="eval-every"):
        GrokkingLazyRich().validate(GrokkingConfig(steps=10, eval_every=20), {})
    with pytest.raises(ConfigError, match="activation"):
        GrokkingConfig(activation="swish")


@pytest.mark.slow
def test_tiny_run_records_curves_alignment_and_laziness(tmp_path):
    cfg = make_config("grokking-lazy-rich", smoke=True, seeds=1, alphas="0.5,8", steps=40)
    _, summary = run_recipe("grokking-lazy-rich", cfg, out=tmp_path / "run")
    lo, hi = summary["rows"]
    assert lo["alpha"] == 0.5 and hi["alpha"] == 8
    assert lo["lr"] == pytest.approx(0.2 / 0.25) and hi["lr"] == pytest.approx(0.2 / 64)
    # f = 0 at init: both curves start at mean(y^2) / Var(y) ~ 1
    assert lo["test_mean_curve"][0] == pytest.approx(1.0, abs=0.3)
    assert lo["train_steps"][:3] == [0, 5, 10] and lo["test_steps"][-1] == 40
    # alignment is alpha-invariant (same theta0 per seed); laziness: alpha=8 moves less
    assert lo["alignment"] == pytest.approx(hi["alignment"], rel=1e-9)
    assert 0 < lo["alignment"][0] < 1
    k = "rel_layers.0.weight_mean"
    assert hi[k] < lo[k]
    assert len(summary["claims"]) == 2
