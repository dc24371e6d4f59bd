"""neural-collapse recipe [#73]: class subsets, the model, and the claim logic."""

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.probes.neural_collapse import (
    ARMS,
    CollapseNet,
    NeuralCollapse,
    NeuralCollapseConfig,
    class_subset,
)


def test_class_subset_sizes():
    y = torch.arange(1000) % 10
    bal = class_subset(y, 10, 1.0, 0)
    assert torch.bincount(y[bal]).tolist() == [100] * 10
    imb = class_subset(y, 10, 0.1, 0)
    counts = torch.bincount(y[imb]).tolist()
    assert counts[0] == 100 and counts[-1] == 10 and counts == sorted(counts, reverse=True)
    assert torch.equal(imb, class_subset(y, 10, 0.1, 0))


def test_model_has_a_bias_free_linear_head():
    m = CollapseNet(64, 16, 10)
    assert [n for n, _ in m.head.named_parameters()] == ["0.weight", "1.weight", "2.weight"]
    assert m(torch.randn(3, 64)).shape == (3, 10)


def _arm(nc1_first=2.0, nc1_final=0.1, cos=-0.11, abs_cos=0.05, rho=0.9, train=100.0):
    s = lambda v: {"mean": v, "std": 0.01}  # noqa: E731
    return {
        "n": 3,
        "train_acc": s(train),
        "train_acc_min": train,
        "test_acc": s(90.0),
        "nc1_first": s(nc1_first),
        "nc1_final": s(nc1_final),
        "cos_mean": s(cos),
        "abs_cos": s(abs_cos),
        "spearman": s(rho),
        "diverged": [],
    }


def _summary(**over):
    arms = {a: _arm() for a in ARMS}
    for a, kw in over.items():
        arms[a.replace("_", "-")] = _arm(**kw)
    return {"arms": arms, "etf_cosine": -1 / 9, "chance_pct": 10.0}


def test_claim_logic():
    c = NeuralCollapse.check_claims(_summary())
    assert [x.held for x in c] == [True, True, True]
    c = NeuralCollapse.check_claims(_summary(ce_balanced={"nc1_final": 0.5, "cos": -0.2}))
    assert [x.held for x in c] == [False, False, True]
    c = NeuralCollapse.check_claims(_summary(mse_imbalanced={"abs_cos": 0.3, "rho": 0.5}))
    assert [x.held for x in c] == [True, True, False]
    c = NeuralCollapse.check_claims(_summary(mse_imbalanced={"train": 95.0}))
    assert [x.held for x in c] == [None, True, None] and "terminal phase" in c[2].detail


def test_config_checks():
    with pytest.raises(ConfigError, match="--ratio"):
        NeuralCollapseConfig(ratio=0.0)
    with pytest.raises(ConfigError, match="--hidden"):
        NeuralCollapseConfig(hidden=1)
