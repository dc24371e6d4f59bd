"""model-zoo-phases recipe: the grid, the region search and Spearman helper on hand cases, and
the claim logic on hand-made summaries."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.probes.model_zoo_phases import (
    MAX_BARRIER,
    ModelZooPhases,
    ModelZooPhasesConfig,
    _correlations,
    _largest_region,
    _spearman,
)


def test_grid_gives_four_widths_and_four_temperatures_a_factor_two_apart():
    cfg = ModelZooPhasesConfig(min_width=8, lr=0.1, batch_size=32)
    assert cfg.widths() == (8, 16, 32, 64)
    temps = sorted(lr / b for lr in cfg.lrs() for b in cfg.batch_sizes())
    assert temps == pytest.approx([0.1 / 128, 0.2 / 128, 0.1 / 32, 0.2 / 32])
    assert [b / a for a, b in zip(temps, temps[1:], strict=False)] == pytest.approx([2, 2, 2])
    with pytest.raises(ConfigError, match="larger batch"):
        ModelZooPhases().validate(ModelZooPhasesConfig(batch_size=1000), {"train": 3500})


def test_largest_region_uses_edge_adjacency():
    assert _largest_region([]) == []
    assert len(_largest_region([(0, 0), (1, 1), (2, 2)])) == 1  # diagonal: not adjacent
    assert _largest_region([(0, 0), (0, 1), (3, 3), (1, 1), (3, 0)]) == [[0, 0], [0, 1], [1, 1]]


def test_spearman_on_known_cases():
    assert _spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert _spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert _spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-5)  # ties
    assert _spearman([1, 2, 3], [5, 5, 5]) == 0.0  # constant: no ordering, not NaN
    assert _spearman([1, 2, 3, 4], [1, float("nan"), 3, 4]) == pytest.approx(1.0)


def _ms(v):
    return {"mean": v, "std": 0.0}


def _summary(trace, barrier, gap, acc=60.0, diverged=()):
    """4x4 cells from functions of (width index, temperature index)."""
    cells = []
    for wi in range(4):
        for ti in range(4):
            cells.append(
                {
                    "width": 8 * 2**wi,
                    "temperature": 0.001 * 2**ti,
                    "w_index": wi,
                    "t_index": ti,
                    "hessian_trace": _ms(trace(wi, ti)),
                    "barrier": _ms(barrier(wi, ti)),
                    "barrier_aligned": _ms(0.0),
                    "test_acc": _ms(acc),
                    "averaging_gap": _ms(gap(wi, ti)),
                }
            )
    return {
        "cells": cells,
        "correlations": _correlations(cells),
        "chance_pct": 10.0,
        "min_test_acc": acc,
        "diverged_members": list(diverged),
    }


def test_claims_held_failed_not_tested():
    s = _summary(lambda w, t: 10.0 + t, lambda w, t: 0.2 - 0.05 * w, lambda w, t: 0.5)
    a, b = ModelZooPhases.check_claims(s)
    assert a.held is True and "hessian_trace: ρ(T) +1.00, ρ(width) +0.00" in a.detail
    # barrier <= 0.05 only at the widest width (w index 3): 4 adjacent cells
    assert b.held is True and b.evidence["region"] == [[3, 0], [3, 1], [3, 2], [3, 3]]
    # barrier low everywhere but averaging loses 5 points: no region
    s = _summary(lambda w, t: 10.0 + t, lambda w, t: 0.01, lambda w, t: 5.0)
    a, b = ModelZooPhases.check_claims(s)
    assert a.held is False and "barrier: ρ(T) +0.00" in a.detail and "(fails)" in a.detail
    assert b.held is False and "largest adjacent region 0" in b.detail
    # a single isolated passing cell is not a region
    s = _summary(
        lambda w, t: float(w),
        lambda w, t: MAX_BARRIER if (w, t) in ((0, 0), (2, 2)) else 1.0 + t,
        lambda w, t: 0.0,
    )
    a, b = ModelZooPhases.check_claims(s)
    assert a.held is True and b.held is False and "2 cell(s) pass" in b.detail
    s = _summary(lambda w, t: 1.0 + t, lambda w, t: 0.0, lambda w, t: 0.0, acc=15.0)
    assert all(
        c.held is None and "did not learn" in c.detail for c in ModelZooPhases.check_claims(s)
    )
    s = _summary(lambda w, t: 1.0 + t, lambda w, t: 0.0, lambda w, t: 0.0, diverged=["w8-s1"])
    assert all(c.held is None and "diverged" in c.detail for c in ModelZooPhases.check_claims(s))
