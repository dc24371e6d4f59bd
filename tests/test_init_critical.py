"""Criticality: Gauss-Hermite expectations against closed forms and Monte Carlo, the
susceptibilities, the issue's critical points (GELU solved to the stated digits), the
``critical`` scheme's variances, determinism and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.critical import (
    chi_parallel,
    chi_perp,
    critical_point,
    g_of_k,
    gauss_expect,
    mean_field,
)
from weightlab.init.registry import get_initializer, initialize
from weightlab.models.mlp import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quadrature_matches_closed_forms():
    ks = np.array([0.1, 1.0, 3.7, 20.0])
    # ReLU: E[relu(z)^2] = K/2 exactly (even node count), E[relu'^2] = 1/2
    assert np.allclose(g_of_k("relu", ks), ks / 2, rtol=1e-13)
    assert np.allclose(chi_perp("relu", ks, 2.0), 1.0, rtol=1e-13)
    assert np.allclose(chi_parallel("relu", ks, 2.0), 1.0, rtol=1e-12)
    # sin: E[sin(z)^2] = (1 - e^{-2K})/2, E[cos^2] = (1 + e^{-2K})/2
    assert np.allclose(g_of_k("sin", ks), (1 - np.exp(-2 * ks)) / 2, rtol=1e-12)
    assert np.allclose(chi_perp("sin", ks, 1.0), (1 + np.exp(-2 * ks)) / 2, rtol=1e-12)
    # moments: E[z^4] = 3K^2; a linear activation has chi_par = chi_perp = C_W
    assert np.allclose(gauss_expect(lambda z: z**4, ks), 3 * ks**2, rtol=1e-12)

    def linear(z):
        return 1.5 * z

    assert np.allclose(chi_parallel(linear, ks, 0.7), 0.7 * 2.25, rtol=1e-10)
    assert np.allclose(chi_perp(linear, ks, 0.7), 0.7 * 2.25, rtol=1e-10)


def test_tanh_quadrature_matches_monte_carlo_and_chi_par_is_the_slope():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1_000_000, generator=g, dtype=torch.float64)
    for k in (0.5, 2.0):
        mc = float((torch.tanh(math.sqrt(k) * z) ** 2).mean())
        se = float((torch.tanh(math.sqrt(k) * z) ** 2).std()) / math.sqrt(z.numel())
        assert abs(g_of_k("tanh", k)[0] - mc) < 4 * se
        # chi_par = C_W g'(K) (book Eq. 5.50): a central finite difference of g
        h = 1e-5
        slope = (g_of_k("tanh", k + h)[0] - g_of_k("tanh", k - h)[0]) / (2 * h)
        assert chi_parallel("tanh", k, 1.3)[0] == pytest.approx(1.3 * slope, rel=1e-7)
    # a callable's derivative (autograd) equals the named one's (analytic)
    assert chi_perp(torch.tanh, 0.8, 1.0)[0] == pytest.approx(chi_perp("tanh", 0.8, 1.0)[0])


def test_critical_points_of_the_issue():
    relu = critical_point("relu")
    assert (relu.C_W, relu.C_b, relu.K_star) == (2.0, 0.0, None)
    assert relu.universality == "scale-invariant"
    for act in ("tanh", "sin"):
        cp = critical_point(act)
        assert cp.C_W == pytest.approx(1.0, abs=1e-12) and cp.C_b == 0.0 and cp.K_star == 0.0
    gelu = critical_point("gelu")  # solved from chi_par = chi_perp = 1, not stored
    assert round(gelu.C_W, 3) == 1.983 and round(gelu.C_b, 3) == 0.173
    assert round(gelu.K_star, 2) == 3.56
    assert gelu.universality == "nonzero K*"
    # at the solution: a fixed point with both susceptibilities 1
    k = gelu.K_star
    assert gelu.C_b + gelu.C_W * g_of_k("gelu", k)[0] == pytest.approx(k, rel=1e-10)
    assert chi_parallel("gelu", k, gelu.C_W)[0] == pytest.approx(1.0, rel=1e-9)
    assert chi_perp("gelu", k, gelu.C_W)[0] == pytest.approx(1.0, rel=1e-9)


def test_solver_handles_callables_and_rejects_activations_without_a_critical_point():
    def leaky(z):
        return torch.where(z > 0, z, 0.1 * z)

    cp = critical_point(leaky)  # scale-invariant: C_W = 2 / (1 + 0.01)
    assert cp.universality == "scale-invariant" and cp.C_W == pytest.approx(2 / 1.01)

    def sigmoid(z):  # sigma(0) != 0 and no nonzero K* with C_b >= 0
        return torch.sigmoid(z)

    with pytest.raises(ConfigError, match="no critical point found") as e:
        critical_point(sigmoid)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown activation"):
        critical_point("swishy")


def test_mean_field_recursion_known_answers():
    # ReLU at criticality: flat; at 1.8 and 2.2: (C_W/2)^(l-1)
    mf = mean_field("relu", 2.0, 0.0, 1.0, 50)
    assert np.allclose(mf.K, 1.0) and np.allclose(mf.G, 1.0)
    mf = mean_field("relu", 1.8, 0.0, 1.0, 50)
    assert mf.K[-1] == pytest.approx(0.9**49) and mf.G[0] == pytest.approx(0.9**49)
    # GELU from K = 1 at its critical point drifts to ~1.5 in 50 layers (the issue)
    gelu = critical_point("gelu")
    assert 1.4 < mean_field("gelu", gelu.C_W, gelu.C_b, 1.0, 50).K[-1] < 1.6
    # tanh at C_W = 1: K_l ~ 1/(2l) asymptotically (book Sec. 5.3.3, a_1 = -2 for tanh)
    mf = mean_field("tanh", 1.0, 0.0, 1.0, 2000)
    assert mf.K[-1] * 2 * 2000 == pytest.approx(1.0, rel=0.02)


def test_critical_scheme_variances_bias_and_overrides():
    m = MLP([200, 400, 400, 10], "gelu")
    initialize(m, "critical", seed=3)
    gelu = critical_point("gelu")
    w = m.layers[1].weight.detach().double()
    assert float(w.var()) * 400 == pytest.approx(gelu.C_W, rel=0.02)
    b = torch.cat([m.layers[i].bias.detach().double() for i in range(3)])
    assert float((b**2).mean()) == pytest.approx(gelu.C_b, rel=0.15)
    # the model's activation; an explicit one; overrides
    m = MLP([200, 400, 10], "tanh")
    initialize(m, "critical", seed=3)
    assert float(m.layers[0].weight.detach().double().var()) * 200 == pytest.approx(1.0, rel=0.03)
    assert torch.all(m.layers[0].bias == 0)
    initialize(m, "critical", seed=3, C_W=3.0, C_b=0.5)
    assert float(m.layers[0].weight.detach().double().var()) * 200 == pytest.approx(3.0, rel=0.03)
    assert float((m.layers[0].bias.detach().double() ** 2).mean()) == pytest.approx(0.5, rel=0.2)
    lin = torch.nn.Sequential(torch.nn.Linear(300, 300))
    initialize(lin, "critical", seed=0, activation="relu")
    assert float(lin[0].weight.detach().double().var()) * 300 == pytest.approx(2.0, rel=0.03)


def test_critical_scheme_is_deterministic_per_seed():
    a, b, c = (MLP([20, 30, 5], "gelu") for _ in range(3))
    initialize(a, "critical", seed=7)
    initialize(b, "critical", seed=7)
    initialize(c, "critical", seed=8)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_bad_input_is_one_line():
    lin = torch.nn.Sequential(torch.nn.Linear(3, 3))
    before = lin[0].weight.detach().clone()
    with pytest.raises(ConfigError, match="activation=") as e:
        initialize(lin, "critical", seed=0)
    assert "\n" not in str(e.value) and torch.equal(lin[0].weight, before)
    initialize(lin, "critical", seed=0, C_W=1.0, C_b=0.0)  # both given: no activation needed
    for bad in ({"C_W": -1.0}, {"C_W": 0.0}, {"C_b": float("nan")}):
        with pytest.raises(ConfigError):
            get_initializer("critical", **bad)
