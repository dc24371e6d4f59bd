"""convergent-learning recipe: the pair analysis on small networks and the claim logic on
hand-made summaries."""

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.probes.matching import apply_unit_permutations
from weightlab.recipes.probes.convergent_learning import (
    ConvergentLearning,
    ConvergentLearningConfig,
    analyze_pair,
)
from weightlab.seeding import generator


def test_analyze_pair_on_a_permuted_copy_matches_perfectly():
    a = build(MLP, [6, 10, 8, 3], seed=0)
    b = apply_unit_permutations(a, {"layers.0": torch.randperm(10, generator=generator(1))})
    x = torch.randn(120, 6, generator=generator(2))
    recs = analyze_pair(a, b, x[:80], x[80:], l1=1e-3)
    assert len(recs) == 2
    for r in recs:
        assert r["matched_r"] == pytest.approx(1.0, abs=1e-9)
        assert r["frac_high"] == 1.0 and r["frac_low"] == 0.0
        assert r["one_to_one_r2"] == pytest.approx(1.0, abs=1e-9)
        assert r["sparse_r2"] > 0.99 and r["sorted_r"][0] == pytest.approx(1.0)
    assert "sparse_r2" not in analyze_pair(a, b, x[:80], x[80:], 1e-3, sparse=False)[0]


def _ms(v):
    return {"mean": v, "std": 0.01}


def _layer(name, tr, un, hi=0.1, lo=0.2, sp=0.8, one=0.6):
    return {
        "name": name,
        "trained": {
            "matched_r": _ms(tr),
            "frac_high": _ms(hi),
            "frac_low": _ms(lo),
            "sparse_r2": _ms(sp),
            "one_to_one_r2": _ms(one),
        },
        "untrained": {"matched_r": _ms(un)},
    }


def _summary(layers, acc=90.0, diverged=()):
    return {
        "datasets": [
            {"dataset": "digits", "chance_pct": 10.0, "min_test_acc": acc, "layers": layers}
        ],
        "diverged_members": list(diverged),
    }


def test_claims_held_failed_not_tested():
    ok = [_layer("layers.0", 0.7, 0.45), _layer("layers.1", 0.8, 0.4)]
    assert [c.held for c in ConvergentLearning.check_claims(_summary(ok))] == [True] * 3
    bad = [_layer("layers.0", 0.5, 0.45, hi=0.0, sp=0.62), _layer("layers.1", 0.8, 0.4)]
    c = ConvergentLearning.check_claims(_summary(bad))
    assert [x.held for x in c] == [False, False, False]
    assert "digits layers.0" in c[0].detail and "(fails)" in c[0].detail
    assert "layers.1" in c[0].evidence["cells"][1] and "(fails)" not in c[0].evidence["cells"][1]
    c = ConvergentLearning.check_claims(_summary(ok, acc=15.0))
    assert all(x.held is None for x in c) and "did not learn" in c[0].detail
    c = ConvergentLearning.check_claims(_summary(ok, diverged=["digits seed 1"]))
    assert all(x.held is None for x in c) and "diverged" in c[2].detail


def test_config_checks_and_datasets():
    assert ConvergentLearningConfig().datasets() == ["digits", "mnist1d"]
    assert ConvergentLearningConfig(second_data="none").datasets() == ["digits"]
    assert ConvergentLearningConfig(data="mnist1d", second_data="mnist1d").datasets() == ["mnist1d"]
    with pytest.raises(ConfigError, match="seeds"):
        ConvergentLearningConfig(seeds=1)
    with pytest.raises(ConfigError, match="second-data"):
        ConvergentLearningConfig(second_data="iris")
    with pytest.raises(ConfigError, match="early-epochs"):
        ConvergentLearning().validate(
            ConvergentLearningConfig(epochs=2, early_epochs=3),
            {"train": 100, "val": 10, "test": 10},
        )
    assert math.isfinite(ConvergentLearning.smoke_seconds)
