"""The analytic learning curve of Advani & Saxe (weightlab.dynamics.analytic) on known answers."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.dynamics.analytic import generalization_curve, mp_density, mp_edges, mp_nodes
from weightlab.errors import ConfigError
from weightlab.seeding import generator


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0, 5.0])
def test_density_mass_and_mean(alpha):
    lam, w = mp_nodes(alpha, 512)
    assert float(w.sum()) == pytest.approx(min(1.0, alpha), abs=1e-9)
    # first moment: tr(XᵀX)/d = n·d·(1/d)/d = α
    assert float((w * lam).sum()) == pytest.approx(alpha, rel=1e-10)


def test_density_matches_direct_trapezoid():
    alpha = 2.0
    lo, hi = mp_edges(alpha)
    assert (lo, hi) == pytest.approx(((1 - math.sqrt(2)) ** 2, (1 + math.sqrt(2)) ** 2))
    grid = torch.linspace(lo, hi, 200_001, dtype=torch.float64)
    mass = torch.trapezoid(mp_density(grid, alpha), grid)
    assert float(mass) == pytest.approx(1.0, abs=2e-4)  # sqrt endpoints: slow convergence
    assert float(mp_density(torch.tensor([lo - 0.1, hi + 0.1]), alpha).abs().sum()) == 0.0


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.0])
def test_start_is_total_variance(alpha):
    e = generalization_curve(alpha, [0], eta=0.05, sigma_w2=1.0, sigma_eps2=0.25, sigma_02=0.5)
    assert float(e[0]) == pytest.approx(0.25 + 0.5 + 1.0, rel=1e-10)


def test_noiseless_overcomplete_data_converges_to_zero():
    e = generalization_curve(2.0, [0, 100, 20_000], eta=0.1, sigma_w2=1.0, sigma_eps2=0.0)
    assert float(e[-1]) < 1e-8
    assert float(e[0]) > float(e[1]) > float(e[2])


def test_frozen_subspace_floor_below_alpha_one():
    # α < 1, no noise: only the learnable fraction α of the error decays; (1-α)(σ0²+σw²) stays
    e = generalization_curve(0.4, [50_000], eta=0.1, sigma_w2=1.0, sigma_eps2=0.0, sigma_02=1.0)
    assert float(e[0]) == pytest.approx(0.6 * 2.0, rel=1e-6)


def test_vectorized_over_steps_equals_one_by_one():
    steps = [0, 3, 40, 700]
    all_at_once = generalization_curve(1.0, steps, 0.05, 1.0, 0.25)
    single = torch.cat([generalization_curve(1.0, [t], 0.05, 1.0, 0.25) for t in steps])
    torch.testing.assert_close(all_at_once, single, rtol=1e-12, atol=0)
    assert len(generalization_curve(1.0, 10, 0.05)) == 11  # an int T means 0..T


def test_quadrature_converged_at_alpha_one():
    steps = [10, 500, 4000]
    a = generalization_curve(1.0, steps, 0.05, 1.0, 0.25, nodes=1024)
    b = generalization_curve(1.0, steps, 0.05, 1.0, 0.25, nodes=8192)
    torch.testing.assert_close(a, b, rtol=1e-8, atol=0)
    lam, w = mp_nodes(1.0, 64)  # λ₋ = 0: still exact moments with few nodes
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)


def test_matches_monte_carlo_at_alpha_two():
    """Gradient descent solved exactly in the eigenbasis of XᵀX, averaged over draws of
    teacher, data, noise and init (n = 400, d = 200): within a few % of E_g(t)."""
    n, d, eta, sw2, se2, s02 = 400, 200, 0.05, 1.0, 0.25, 0.25
    steps = torch.tensor([5, 20, 100, 500], dtype=torch.float64)
    g = generator(1234)
    errs = []
    for _ in range(40):
        x = torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        wbar = torch.randn(d, generator=g, dtype=torch.float64) * math.sqrt(sw2)
        eps = torch.randn(n, generator=g, dtype=torch.float64) * math.sqrt(se2)
        w0 = torch.randn(d, generator=g, dtype=torch.float64) * math.sqrt(s02)
        lam, v = torch.linalg.eigh(x.T @ x)
        e0 = v.T @ (w0 - wbar)
        e_inf = (v.T @ (x.T @ eps)) / lam
        decay = (1 - eta * lam).unsqueeze(0) ** steps.unsqueeze(1)
        e_t = decay * e0 + (1 - decay) * e_inf
        errs.append(e_t.square().mean(1) + se2)
    mc = torch.stack(errs).mean(0)
    theory = generalization_curve(n / d, steps.long(), eta, sw2, se2, s02)
    assert float(((mc - theory).abs() / theory).max()) < 0.03


def test_bad_input():
    with pytest.raises(ConfigError, match="alpha"):
        generalization_curve(0.0, 10, 0.05)
    with pytest.raises(ConfigError, match="sigma_eps2"):
        generalization_curve(1.0, 10, 0.05, sigma_eps2=-1.0)
    with pytest.raises(ConfigError, match="integers"):
        generalization_curve(1.0, [0.5], 0.05)
    with pytest.raises(ConfigError, match="eta"):
        generalization_curve(1.0, 10, 0.0)
