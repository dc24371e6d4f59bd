"""Latent-factor tasks and maximum-likelihood factor analysis [#37]."""

import numpy as np
import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.latent import latent_model
from weightlab.dynamics.factor_analysis import FactorModel, fit_factor_analysis
from weightlab.errors import ConfigError, DataError


def test_factor_task_has_the_model_covariance_and_nested_pools():
    t = load_dataset("latent_factors", n_train=20, n_test=50, n_unlabeled=20000, d=8, r=2)
    a, x = t.info["A"], t.info["x_unlabeled"].double()
    cov = torch.cov(x.T, correction=0)
    assert torch.allclose(cov, a @ a.T + torch.eye(8, dtype=torch.float64), atol=0.06)
    assert float(t.info["w"].norm()) == pytest.approx(1.0)
    assert len(t.train) == 20 and len(t.val) == 0 and len(t.test) == 50
    small = load_dataset("latent_factors", n_train=20, n_test=50, n_unlabeled=30, d=8, r=2)
    assert torch.equal(small.info["x_unlabeled"], t.info["x_unlabeled"][:30])
    assert torch.equal(small.train.x, t.train.x)
    # the label is 1[wᵀz > 0]: about balanced
    assert 0.3 < float(t.test.y.double().mean()) < 0.7


def test_labels_follow_the_latent():
    m = latent_model("factors", d=6, r=3, seed=2)
    x, z, y = m.sample(500, "test")
    assert torch.equal(y, (z @ m.w > 0).long())
    mix = latent_model("mixture", d=6, r=4, seed=2)
    x, z, y = mix.sample(500, "test")
    assert int(mix.component_labels.sum()) == 2 and torch.equal(y, mix.component_labels[z])
    # each component's inputs sit around its mean (a column of A)
    assert torch.allclose(x[z == 1].double().mean(0), mix.A[:, 1], atol=0.3)


def test_bad_noise_and_sizes_are_one_line():
    with pytest.raises(DataError, match=r"parameter sigma must be > 0") as e:
        load_dataset("latent_factors", sigma=-1.0)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"sigma must be <= 1000"):
        load_dataset("latent_mixture", sigma=1e4)
    with pytest.raises(DataError, match="r must be >= 2 components"):
        load_dataset("latent_mixture", r=1)
    with pytest.raises(DataError, match="too large"):
        load_dataset("latent_factors", d=100000, n_unlabeled=10000)


def _truth(d=10, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.randn(d, r, generator=g, dtype=torch.float64)
    psi = 0.2 + torch.rand(d, generator=g, dtype=torch.float64)
    return lam, psi


def _sample(lam, psi, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, lam.shape[1], generator=g, dtype=torch.float64)
    return (
        3.0
        + z @ lam.T
        + psi.sqrt() * torch.randn(n, lam.shape[0], generator=g, dtype=torch.float64)
    )


def test_recovers_a_known_model():
    lam, psi = _truth()
    fa = fit_factor_analysis(_sample(lam, psi, 40000), 2, tol=1e-10)
    assert fa.converged
    assert torch.allclose(fa.covariance, lam @ lam.T + torch.diag(psi), atol=0.08)
    assert torch.allclose(fa.noise, psi, atol=0.06)
    assert torch.allclose(fa.mean, torch.full((10,), 3.0, dtype=torch.float64), atol=0.03)


def test_em_never_lowers_the_likelihood_and_posterior_mean_is_lambda_t_sigma_inv():
    lam, psi = _truth(seed=3)
    x = _sample(lam, psi, 300)
    lls = [fit_factor_analysis(x, 2, max_iter=k, tol=0.0).log_likelihood for k in range(1, 8)]
    assert all(b >= a - 1e-12 for a, b in zip(lls[:-1], lls[1:], strict=True))
    fa = fit_factor_analysis(x, 2)
    sigma = fa.covariance
    direct = (x - fa.mean) @ torch.linalg.solve(sigma, fa.loadings)  # Λᵀ Σ⁻¹ (x − μ)
    assert torch.allclose(fa.posterior_mean(x), direct, atol=1e-10)
    assert fa.score(x) == pytest.approx(fa.log_likelihood, abs=1e-9)


def test_matches_scikit_learn_factor_analysis():
    from sklearn.decomposition import FactorAnalysis

    lam, psi = _truth(d=12, r=3, seed=5)
    x = _sample(lam, psi, 2000)
    fa = fit_factor_analysis(x, 3, tol=1e-11)
    ref = FactorAnalysis(3, tol=1e-11, max_iter=20000).fit(x.numpy())
    assert fa.log_likelihood == pytest.approx(ref.score(x.numpy()), abs=1e-6)
    assert np.abs(fa.covariance.numpy() - ref.get_covariance()).max() < 2e-3
    # the posterior mean mapped back through Λ is rotation-invariant
    ours = (fa.posterior_mean(x) @ fa.loadings.T).numpy()
    theirs = ref.transform(x.numpy()) @ ref.components_
    assert np.abs(ours - theirs).max() < 5e-3


def test_bad_input():
    x = torch.randn(20, 5, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"r must be in \[1, d\)"):
        fit_factor_analysis(x, 5)
    x[0, 0] = float("inf")
    with pytest.raises(DataError, match="non-finite"):
        fit_factor_analysis(x, 2)
    model = FactorModel(torch.zeros(3), torch.ones(3, 1), torch.ones(3), 0.0, 0, True)
    with pytest.raises(DataError, match="has 4 columns; the model has 3"):
        model.posterior_mean(torch.zeros(2, 4))
