"""The Clauset–Shalizi–Newman power-law fit of ESD tails (weightwatcher's conventions) and
the finger guard: known answers, the pruned search against an exhaustive one, refusal."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError, DataError
from weightlab.probes.powerlaw import (
    FINGER_MIN_ALPHA,
    FINGER_THRESH,
    clip_fingers,
    fit_power_law,
    fit_power_law_batch,
)


def pareto(n: int, alpha: float, xmin: float, seed: int) -> torch.Tensor:
    """n draws of p(x) ∝ x^(−α) on x ≥ xmin (inverse CDF)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def exhaustive(x: torch.Tensor) -> tuple[float, float, int]:
    """weightwatcher's WWFit loop, written out: every candidate but the largest value."""
    x = torch.sort(x.to(torch.float64)).values
    n_all = x.numel()
    best = None
    for i in range(n_all - 1):
        n = n_all - i
        s = float(torch.log(x[i:]).sum() - n * torch.log(x[i]))
        a = 1.0 + n / s
        d = 1.0
        if a > 1:
            fit = 1.0 - (x[i:] / x[i]) ** (1.0 - a)
            d = float((fit - torch.arange(n, dtype=torch.float64) / n).abs().max())
        if best is None or d < best[1]:
            best = (a, d, i)
    return best


def test_fixed_xmin_is_the_mle_formula():
    x = torch.tensor([0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0], dtype=torch.float64)
    f = fit_power_law(x, xmin=2.0)
    tail = x[x >= 2.0]
    want = 1.0 + tail.numel() / float(torch.log(tail / 2.0).sum())
    assert f.alpha == pytest.approx(want, rel=1e-12)
    assert f.n_tail == 8 and f.method == "fixed_xmin"
    assert f.sigma == pytest.approx((want - 1) / math.sqrt(8))


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_pareto_alpha_recovered(alpha):
    x = pareto(4000, alpha, 1.0, seed=int(alpha * 10))
    fixed = fit_power_law(x, xmin=1.0)  # standard error (α−1)/√n ≈ 0.016–0.055
    assert fixed.alpha == pytest.approx(alpha, abs=0.12)
    auto = fit_power_law(x)
    assert auto.alpha == pytest.approx(alpha, abs=0.25)
    assert auto.ks_distance < 0.05 and auto.method == "csn"


@pytest.mark.parametrize("seed", range(12))
def test_pruned_search_equals_exhaustive(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(20, 260, (1,), generator=g))
    a = 1.5 + 3 * float(torch.rand(1, generator=g))
    w = torch.randn(2 * n, n, generator=g, dtype=torch.float64) * pareto(n, a, 0.1, seed)
    ev = torch.linalg.eigvalsh(w.T @ w)
    ev = ev[ev > 1e-5]
    f = fit_power_law(ev)
    ea, ed, ei = exhaustive(ev)
    assert f.n_tail == ev.numel() - ei
    assert f.alpha == pytest.approx(ea, rel=1e-10)
    assert f.ks_distance == pytest.approx(ed, rel=1e-9)


def test_batch_equals_single_fits():
    xs = [pareto(n, 2.5, 1.0, seed=n) for n in (30, 30, 64, 9, 200)]
    batch = fit_power_law_batch(xs)
    for x, (plain, clipped) in zip(xs, batch, strict=True):
        assert plain == fit_power_law(x)
        assert clipped == clip_fingers(x)


def test_refuses_below_min_evals():
    with pytest.raises(DataError, match="too small to fit: 7 eigenvalues < min_evals=8"):
        fit_power_law(torch.arange(1.0, 8.0))
    assert fit_power_law(torch.arange(1.0, 9.0)).method == "small_n"
    # a (nearly) low-rank spectrum: 10 eigenvalues but only 3 above the 1e-5 threshold
    with pytest.raises(DataError, match="3 of 10 eigenvalues are above"):
        fit_power_law(torch.tensor([0.0] * 7 + [1.0, 2.0, 3.0]))
    out = fit_power_law_batch([torch.arange(1.0, 5.0), torch.arange(1.0, 30.0)])
    assert isinstance(out[0], str) and "too small" in out[0]
    assert not isinstance(out[1], str)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="min_evals"):
        fit_power_law(torch.arange(1.0, 30.0), min_evals=1)
    with pytest.raises(ConfigError, match="xmin"):
        fit_power_law(torch.arange(1.0, 30.0), xmin=-1.0)
    with pytest.raises(ConfigError, match="finger_thresh"):
        clip_fingers(torch.arange(1.0, 30.0), finger_thresh=0.0)
    with pytest.raises(DataError, match="non-finite"):
        fit_power_law(torch.tensor([1.0] * 9 + [math.nan]))


def finger_spectrum() -> torch.Tensor:
    """A flat bulk (100 values evenly on [1, 4]) and three tightly clustered outliers 5%
    above it ('fingers'): the KS search picks a short, steep tail (α ≈ 18.5); without the
    three fingers the fit finds α ≈ 10.7."""
    bulk = torch.linspace(1.0, 4.0, 100, dtype=torch.float64)
    fingers = 4.2 * (1.0 + 0.01 * torch.arange(3, dtype=torch.float64))
    return torch.cat([bulk, fingers])


def test_finger_guard_follows_the_clip_xmax_rule():
    x = torch.sort(finger_spectrum()).values
    plain = fit_power_law(x)
    guarded = clip_fingers(x)
    # the rule by hand: the first k = 2..9 with α_k + 1 < α, stopping once α_k ≤ 2
    want_k, want = 0, plain.alpha
    for k in range(2, 10):
        a = fit_power_law(x[:-k]).alpha
        if a + FINGER_THRESH < plain.alpha:
            want_k, want = k, a
            break
        if a <= FINGER_MIN_ALPHA:
            break
    assert want_k > 0, "the constructed spectrum must have fingers"
    assert guarded.n_fingers == want_k and guarded.alpha == pytest.approx(want, rel=1e-12)
    assert guarded.alpha < plain.alpha - FINGER_THRESH
    assert (want_k, round(plain.alpha, 1), round(guarded.alpha, 1)) == (3, 18.5, 10.7)


def test_finger_guard_leaves_clean_power_laws_alone():
    x = pareto(500, 2.5, 1.0, seed=11)
    guarded, plain = clip_fingers(x), fit_power_law(x)
    assert guarded.n_fingers == 0 and guarded.alpha == plain.alpha
