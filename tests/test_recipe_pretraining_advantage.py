"""pretraining-advantage recipe [#37]: one seed's numbers, the claim logic, bad input."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.pretraining_advantage import (
    PretrainingAdvantage,
    PretrainingAdvantageConfig,
)


def test_one_seed_pretraining_beats_supervised_with_many_unlabeled():
    cfg = PretrainingAdvantageConfig(seeds=1, unlabeled="20,2000", n_test=1000)
    rec = PretrainingAdvantage.member(cfg, 0)
    (few, many) = rec["pretrained"]
    assert few["m"] == 20 and many["m"] == 2000 and many["converged"]
    assert many["error"] < rec["supervised_error"] and many["error"] < few["error"]
    assert many["error"] == pytest.approx(rec["oracle_error"], abs=0.03)
    assert rec["chance"] >= 0.5


def _summary(errs_by_m, sup, seeds=4, chance=50.0):
    rows = [
        {"m": m, "errors": e, "error_mean": sum(e) / len(e), "error_std": 0.0} for m, e in errs_by_m
    ]
    return {
        "rows": rows,
        "supervised": {"mean": sum(sup) / len(sup), "errors": sup},
        "n_labeled": 50,
        "chance_pct": chance,
        "seeds": seeds,
    }


def test_claim_logic():
    sup = [0.12, 0.13, 0.11, 0.12]
    good = [
        (10, [0.30, 0.25, 0.22, 0.24]),
        (100, [0.10, 0.11, 0.09, 0.10]),
        (1000, [0.09, 0.10, 0.08, 0.09]),
    ]
    a, b = PretrainingAdvantage.check_claims(_summary(good, sup))
    assert a.held is True and b.held is True
    # a step rising well beyond one paired SE breaks (a)
    rising = [good[0], (100, [0.10, 0.11, 0.09, 0.10]), (1000, [0.12, 0.13, 0.11, 0.12])]
    a, b = PretrainingAdvantage.check_claims(_summary(rising, sup))
    assert a.held is False and "rises" in a.detail and b.held is False
    # no halving from the smallest to the largest m
    flat = [(10, [0.15, 0.16, 0.14, 0.15]), (1000, [0.10, 0.11, 0.09, 0.10])]
    assert PretrainingAdvantage.check_claims(_summary(flat, sup))[0].held is False
    # no m >= 20 n: (b) not tested; a baseline at chance: both not tested
    a, b = PretrainingAdvantage.check_claims(_summary(good[:2], sup))
    assert b.held is None and "no m >= 20 n" in b.detail
    a, b = PretrainingAdvantage.check_claims(_summary(good, [0.45] * 4))
    assert a.held is None and b.held is None and "did not learn" in a.detail


def test_bad_config_is_one_line():
    with pytest.raises(
        ConfigError, match=r"--unlabeled must be strictly increasing.*100 does not increase on 100"
    ):
        PretrainingAdvantageConfig(unlabeled="10,100,100")
    with pytest.raises(
        ConfigError, match=r"--unlabeled must be comma-separated integers.*'x' is not an integer"
    ):
        PretrainingAdvantageConfig(unlabeled="10,x")
    with pytest.raises(ConfigError, match="--r 100 must be below --d 100"):
        PretrainingAdvantageConfig(r=100)
    with pytest.raises(ConfigError, match="--sigma must be > 0"):
        PretrainingAdvantageConfig(sigma=0.0)


def test_refuses_another_task():
    r = PretrainingAdvantage()
    cfg = PretrainingAdvantageConfig(data="xor")
    with pytest.raises(ConfigError, match="use --data latent_factors"):
        r.validate(cfg, {"train": 50, "val": 0, "test": 10})
