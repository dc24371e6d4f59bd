"""Opposing-signals finder on constructed loss histories with known groups."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.probes.opposing import find_opposing_groups, loss_spikes


def _history(seed=0, t=60, n=30):
    g = torch.Generator().manual_seed(seed)
    base = 1.0 + 0.01 * torch.randn(t, n, generator=g)  # quiet examples
    wave = torch.sin(torch.arange(t, dtype=torch.float64) * 0.9)
    for i in range(4):  # group 1: columns 0-3 oscillate with the wave
        base[:, i] += (1.5 - 0.1 * i) * wave + 0.05 * torch.randn(t, generator=g)
    for i in range(4, 8):  # group 2: columns 4-7 oscillate against it
        base[:, i] -= (1.2 - 0.1 * (i - 4)) * wave + 0.05 * torch.randn(t, generator=g)
    return base


def test_finds_the_two_planted_groups_with_anti_correlated_losses():
    r = find_opposing_groups(_history(), k=8)
    assert set(r.candidates) == set(range(8))
    assert set(r.group_a) == {0, 1, 2, 3} and set(r.group_b) == {4, 5, 6, 7}
    assert r.between_corr < -0.9 and r.within_corr > 0.9
    assert r.scores == tuple(sorted(r.scores, reverse=True))


def test_one_coherent_group_gives_no_opposition():
    h = _history()
    h[:, 4:8] = 1.0 + 0.5 * (h[:, 0:4] - 1.0)  # everything moves together
    r = find_opposing_groups(h, k=8)
    assert not r.group_b or math.isnan(r.between_corr) or r.between_corr > 0


def test_loss_spikes_are_local_maxima_above_the_recent_minimum():
    curve = torch.tensor([1.0, 0.8, 0.6, 0.5, 0.9, 0.5, 0.4, 0.41, 0.3])
    assert loss_spikes(curve, rise=0.1, window=3) == [4]
    assert loss_spikes(curve, rise=1.0, window=3) == []


def test_bad_histories_are_one_line_errors():
    with pytest.raises(ConfigError, match="at least 3"):
        find_opposing_groups(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="k must"):
        find_opposing_groups(torch.zeros(5, 5), k=9)
    h = _history()
    h[3, 2] = float("nan")
    with pytest.raises(ConfigError, match="non-finite"):
        find_opposing_groups(h, k=8)
