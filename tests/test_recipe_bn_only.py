"""Recipe ``bn-only``: the random-subset transform, the parameter counts, claim logic."""

import pytest
import torch

from weightlab.core.transforms import attach
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.recipes.init.bn_only import (
    BNOnly,
    BNOnlyConfig,
    DigitsCNN,
    RandomSubset,
    bn_names,
    conv_weight_names,
    random_subset_masks,
)


def _model():
    return build(DigitsCNN, [4, 8, 8], 10, seed=0, init="kaiming_uniform")


def test_bn_names_masks_and_counts():
    m = _model()
    assert bn_names(m) == [f"net.features.{i}.{a}" for i in (1, 5, 9) for a in ("weight", "bias")]
    k = sum(p.numel() for n, p in m.named_parameters() if n in bn_names(m))
    assert k == 2 * (4 + 8 + 8)
    masks = random_subset_masks(m, k, torch.Generator().manual_seed(0))
    assert sorted(masks) == sorted(conv_weight_names(m))
    assert sum(int(x.sum()) for x in masks.values()) == k
    with pytest.raises(ConfigError, match="cannot pick"):
        random_subset_masks(m, 10**6, torch.Generator().manual_seed(0))


def test_random_subset_trains_only_the_chosen_entries():
    m = _model()
    w0 = m.net.features[4].weight.detach().clone()
    mask = torch.zeros_like(w0, dtype=torch.bool)
    mask.view(-1)[:5] = True
    attach(m, "net.features.4.weight", RandomSubset(mask))
    assert torch.equal(m.net.features[4].weight, w0)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    m(x).square().sum().backward()
    g = m.net.features[4].parametrizations.weight.original.grad
    assert torch.all(g[~mask] == 0) and torch.any(g[mask] != 0)
    with torch.no_grad():
        m.net.features[4].parametrizations.weight.original.add_(1.0)
    w = m.net.features[4].weight
    assert torch.equal(w[~mask], w0[~mask]) and torch.allclose(w[mask], w0[mask] + 1)


def _row(arm, acc, trainable=100, disabled=None, excluded=()):
    return {
        "arm": arm,
        "test_acc_mean": acc,
        "trainable": trainable,
        "gamma_disabled_pct_mean": disabled,
        "excluded": list(excluded),
    }


def test_claims():
    chance = 10.0
    rows = [_row("bn", 60.0, disabled=15.0), _row("random", 40.0), _row("all", 95.0)]
    assert [c.verdict for c in BNOnly.check_claims(rows, chance)] == ["held", "held"]
    rows = [_row("bn", 44.0, disabled=5.0), _row("random", 40.0), _row("all", 95.0)]
    assert [c.verdict for c in BNOnly.check_claims(rows, chance)] == [
        "did not hold",
        "did not hold",
    ]
    rows = [_row("bn", 29.0, disabled=15.0), _row("random", 10.0), _row("all", 95.0)]
    assert BNOnly.check_claims(rows, chance)[0].verdict == "did not hold"  # < chance + 20
    rows = [_row("bn", 60.0, disabled=15.0), _row("random", 40.0), _row("all", 39.0)]
    assert [c.verdict for c in BNOnly.check_claims(rows, chance)] == ["not tested"] * 2


def test_bad_channels():
    with pytest.raises(ConfigError, match="--channels"):
        BNOnlyConfig(channels="8,16")
    with pytest.raises(ConfigError, match="--channels"):
        BNOnlyConfig(channels="8,x,4")
