"""spsa-one-byte recipe: the claim logic on hand-made rows."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.adapters.spsa_one_byte import SPSAOneByte, SPSAOneByteConfig


def _row(arm, start, final, std, minimum=None, workers=4, n=3):
    return {
        "arm": arm,
        "workers": workers,
        "start_mean": start,
        "final_mean": final,
        "final_std": std,
        "min_mean": final if minimum is None else minimum,
        "fall_mean": (start - final) / start,
        "diverged": [],
        "n": n,
    }


def _rows(fp=2.0, ob=2.05, std=0.05, single=2.2, fp_min=None, n=3):
    return [
        _row("fp32", 2.6, fp, std, fp_min, n=n),
        _row("1byte", 2.6, ob, 0.04, n=n),
        _row("single", 2.6, single, 0.05, workers=1, n=n),
    ]


def test_claims_held_and_failed():
    c = SPSAOneByte.check_claims(_rows(), chance=11.0, a_acc=60.0, b_acc=20.0)
    assert [x.held for x in c] == [True, True]
    # 1-byte off by 0.2 > 2 x 0.05; single worker fell only 3.8%
    c = SPSAOneByte.check_claims(_rows(ob=2.2, single=2.5), 11.0, 60.0, 20.0)
    assert [x.held for x in c] == [False, False]


def test_claims_not_tested():
    c = SPSAOneByte.check_claims(_rows(), 11.0, a_acc=60.0, b_acc=40.0)
    assert [x.held for x in c] == [None, None] and "too mild" in c[0].detail
    c = SPSAOneByte.check_claims(_rows(fp_min=1.5), 11.0, 60.0, 20.0)
    assert c[0].held is True and c[1].held is None and "not stable" in c[1].detail
    c = SPSAOneByte.check_claims(_rows(n=1), 11.0, 60.0, 20.0)
    assert c[1].held is None and ">= 2 seeds" in c[1].detail


def test_config_checks():
    with pytest.raises(ConfigError, match="workers"):
        SPSAOneByteConfig(workers=1)
    with pytest.raises(ConfigError, match="eps"):
        SPSAOneByteConfig(eps=0.0)
