"""Train/test representation divergences [#80] against closed forms on linear networks."""

import math

import pytest
import torch
from scipy import integrate, stats

from weightlab.errors import ConfigError, DataError
from weightlab.probes.generalization import (
    gaussian_fit,
    gaussian_kl,
    kl_gaussians,
    layer_divergences,
    random_directions,
    sliced_w1,
    sliced_w1_gaussians,
    w1_1d,
    w1_gaussians_1d,
)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _spd(d, seed):
    a = torch.randn(d, d, generator=_g(seed), dtype=torch.float64)
    return a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)


def _sample(mu, cov, n, seed):
    z = torch.randn(n, len(mu), generator=_g(seed), dtype=torch.float64)
    return mu + z @ torch.linalg.cholesky(cov).T


def test_kl_closed_form_matches_torch_distributions():
    d = 5
    mu0, mu1 = torch.randn(d, generator=_g(1), dtype=torch.float64), torch.zeros(d)
    c0, c1 = _spd(d, 2), _spd(d, 3)
    mvn = torch.distributions.MultivariateNormal
    want = torch.distributions.kl_divergence(mvn(mu0, c0), mvn(mu1.double(), c1))
    assert kl_gaussians(mu0, c0, mu1, c1) == pytest.approx(float(want), rel=1e-10)
    assert kl_gaussians(mu0, c0, mu0, c0) == pytest.approx(0.0, abs=1e-12)


def test_w1_1d_hand_cases_and_scipy():
    a = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    assert float(w1_1d(a, b)) == pytest.approx(0.75)
    assert float(w1_1d(torch.tensor([[0.0]]).double(), torch.tensor([[0.0, 2.0]]).double())) == (
        pytest.approx(1.0)
    )
    x = torch.randn(3, 37, generator=_g(4), dtype=torch.float64)
    y = 0.5 + 2 * torch.randn(3, 50, generator=_g(5), dtype=torch.float64)
    got = w1_1d(x, y)
    for i in range(3):
        assert float(got[i]) == pytest.approx(stats.wasserstein_distance(x[i], y[i]), rel=1e-10)


def test_w1_of_1d_gaussians_closed_form():
    for m0, s0, m1, s1 in [(0.3, 1.0, -0.2, 2.5), (1.0, 2.0, 0.0, 0.5)]:
        f0, f1 = stats.norm(m0, s0), stats.norm(m1, s1)
        num, _ = integrate.quad(lambda u, f0=f0, f1=f1: abs(f0.ppf(u) - f1.ppf(u)), 0, 1, limit=100)
        assert float(w1_gaussians_1d(m0, s0, m1, s1)) == pytest.approx(num, rel=1e-6)
    assert float(w1_gaussians_1d(0.4, 1.0, -0.1, 1.0)) == pytest.approx(0.5)


def test_linear_network_with_gaussian_inputs_matches_closed_forms():
    """A layer maps N(mu, S) to N(W mu, W S W^T): both estimators against their closed forms
    at every layer (the narrowing layer loses KL: data processing)."""
    d, n = 4, 20000
    mu0, mu1 = torch.zeros(d, dtype=torch.float64), torch.tensor([0.5, -0.3, 0.2, 0.0]).double()
    c0, c1 = _spd(d, 6), 1.5 * _spd(d, 6)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(d, d, bias=False), torch.nn.Linear(d, 2, bias=False)
    ).double()
    x0, x1 = _sample(mu0, c0, n, 7), _sample(mu1, c1, n, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = layer_divergences(net, x0, x1, ["0", "1"], num_projections=32, seed=3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    w = torch.eye(d, dtype=torch.float64)
    for r, layer in zip(res, net, strict=True):
        w = layer.weight.detach() @ w
        m0, m1, s0, s1 = w @ mu0, w @ mu1, w @ c0 @ w.T, w @ c1 @ w.T
        # exact: the fitted moments of W x are W mu_hat and W S_hat W^T
        (e0, f0), (e1, f1) = gaussian_fit(x0), gaussian_fit(x1)
        exact = kl_gaussians(w @ e0, w @ f0 @ w.T, w @ e1, w @ f1 @ w.T)
        assert r.kl_gaussian == pytest.approx(exact, rel=1e-6)
        # statistical: the population closed form
        assert r.kl_gaussian == pytest.approx(kl_gaussians(m0, s0, m1, s1), rel=0.1, abs=5e-3)
        from weightlab.seeding import derive_seed

        th = random_directions(r.dim, 32, derive_seed("sliced-w1", 3, r.dim))
        want = sliced_w1_gaussians(m0, s0, m1, s1, th)
        assert r.sliced_w1 == pytest.approx(want, rel=0.05, abs=0.01)
        assert r.to_dict()["dim"] == r.dim
    # the square layer keeps the KL (invertible), the 4 -> 2 layer cannot increase it
    assert res[0].kl_gaussian == pytest.approx(kl_gaussians(mu0, c0, mu1, c1), rel=0.1)
    assert res[1].kl_gaussian <= res[0].kl_gaussian + 1e-3


def test_sliced_w1_seeded_and_zero_on_equal_samples():
    p = torch.randn(100, 3, generator=_g(9))
    assert sliced_w1(p, p, 16, seed=1) == 0.0
    q = p + 1.0
    assert sliced_w1(p, q, 16, seed=1) == sliced_w1(p, q, 16, seed=1)
    th = random_directions(3, 16, 1)
    assert torch.allclose(th.norm(dim=1), torch.ones(16, dtype=torch.float64))
    # a pure shift: W1 of each projection is |theta . shift|
    want = float((th @ torch.ones(3, dtype=torch.float64)).abs().mean())
    assert sliced_w1(p, q, directions=th) == pytest.approx(want, rel=1e-6)


def test_rank_deficient_layer_needs_a_ridge_and_bad_input():
    x = torch.randn(50, 2, generator=_g(10), dtype=torch.float64)
    wide = x @ torch.randn(2, 4, generator=_g(11), dtype=torch.float64)  # rank 2 in 4 dims
    with pytest.raises(DataError, match="ridge"):
        gaussian_kl(wide, wide + 0.1, ridge=0.0)
    assert math.isfinite(gaussian_kl(wide, wide + 0.1, ridge=1e-6))
    mu, cov = gaussian_fit(x)
    assert torch.allclose(cov, torch.cov(x.T, correction=0))
    with pytest.raises(DataError, match="different dims"):
        sliced_w1(x, wide)
    with pytest.raises(DataError, match="flatten"):
        gaussian_kl(x.view(50, 2, 1), x.view(50, 2, 1))
    net = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with pytest.raises(ConfigError, match="do not exist.*its modules are: 0"):
        layer_divergences(net, x.float(), x.float(), ["fc1"])
    with pytest.raises(ConfigError, match="projection"):
        random_directions(3, 0, 0)
