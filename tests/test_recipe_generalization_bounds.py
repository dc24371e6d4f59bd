"""generalization-bounds recipe [#80]: the task, one seed's numbers, and the claim logic."""

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.gaussian import binary_gaussian_split as binary_gaussian
from weightlab.errors import ConfigError
from weightlab.recipes.probes.generalization_bounds import (
    GeneralizationBounds,
    GeneralizationBoundsConfig,
)


def test_binary_gaussian_task():
    s = binary_gaussian(2000, 5, 1.5, 0)
    assert s.x.shape == (2000, 5) and int(s.y.sum()) == 1000
    m1, m0 = s.x[s.y == 1].mean(0), s.x[s.y == 0].mean(0)
    assert float(m1[0]) == pytest.approx(1.5, abs=0.1) and float(m0[0]) == pytest.approx(
        -1.5, abs=0.1
    )
    assert float(s.x[:, 1:].std()) == pytest.approx(1.0, abs=0.05)
    assert torch.equal(s.x, binary_gaussian(2000, 5, 1.5, 0).x)
    task = load_dataset("binary_gaussian", n_train=10, n_test=20, d=3, seed=1)
    assert len(task.train) == 10 and len(task.val) == 0 and len(task.test) == 20
    assert not torch.equal(task.train.x, load_dataset("binary_gaussian", d=3).train.x[:10])


def test_one_seed_measures_every_hidden_layer():
    cfg = GeneralizationBoundsConfig(seeds=1, d=6, depth=4, n_train=30, n_test=300, steps=40)
    rec = GeneralizationBounds._member(cfg, 0)
    assert not rec["diverged"] and [lay["name"] for lay in rec["layers"]] == [
        "layers.0",
        "layers.1",
        "layers.2",
    ]
    for lay in rec["layers"]:
        assert lay["bound"] == pytest.approx(lay["lipschitz"] * lay["sw1"])
        assert lay["kl"] > 0 and lay["sw1"] > 0
        # analytic and estimated agree in order of magnitude (finite test sample)
        assert 0.3 < lay["sw1"] / lay["sw1_analytic"] < 3
    assert rec["layers"][-1]["lipschitz"] > 0


def _summary(bounds_per_seed, acc=80.0, diverged=()):
    per = [
        {
            "seed": i,
            "argmin": min(range(len(b)), key=lambda k, b=b: b[k]),
            "argmin_layer": f"layers.{min(range(len(b)), key=lambda k, b=b: b[k])}",
            "min_bound": min(b),
            "first_bound": b[0],
            "last_bound": b[-1],
            "bounds": b,
        }
        for i, b in enumerate(bounds_per_seed)
    ]
    return {
        "per_seed": per,
        "test_acc": {"mean": acc, "std": 1.0},
        "chance_pct": 50.0,
        "diverged_members": list(diverged),
        "seeds": len(per),
    }


def test_claim_logic():
    funnel = [1.0, 0.5, 1.0]
    (c,) = GeneralizationBounds.check_claims(_summary([funnel, funnel, [1.0, 0.9, 0.8]]))
    assert c.held is True and c.evidence["funnel_layer"] == "layers.1"
    (c,) = GeneralizationBounds.check_claims(_summary([funnel, [1.0, 0.9, 0.8], [1.0, 0.95, 1.0]]))
    assert c.held is False  # one funnel; the other interior minimum is only 5% below
    (c,) = GeneralizationBounds.check_claims(_summary([funnel] * 3, acc=55.0))
    assert c.held is None and "did not learn" in c.detail
    (c,) = GeneralizationBounds.check_claims(_summary([funnel] * 3, diverged=["seed 1"]))
    assert c.held is None and "diverged" in c.detail


def test_config_checks():
    r = GeneralizationBounds()
    with pytest.raises(ConfigError, match="must exceed --d"):
        r.validate(GeneralizationBoundsConfig(n_train=10, d=16), {})
    with pytest.raises(ConfigError, match="use --data binary_gaussian"):
        r.validate(GeneralizationBoundsConfig(data="digits"), {})
    with pytest.raises(ConfigError, match="--depth"):
        GeneralizationBoundsConfig(depth=2)
