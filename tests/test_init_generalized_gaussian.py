"""Generalized-Gaussian fit, likelihood and init (methods row [#24])."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init import get_initializer, initialize
from weightlab.init.generalized_gaussian import (
    BETA_MAX,
    BETA_MIN,
    fit_generalized_gaussian,
    gaussian_fit,
    gg_log_likelihood,
    gg_scale_for_std,
    gg_variance,
    sample_generalized_gaussian,
    scale_mle,
)
from weightlab.seeding import generator


def test_log_likelihood_matches_scipy_gennorm():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    for beta, scale in [(0.7, 0.3), (2.0, 1.1), (5.0, 2.0)]:
        ref = st.gennorm.logpdf(x.numpy(), beta, loc=0, scale=scale).mean()
        assert gg_log_likelihood(x, beta, scale) == pytest.approx(ref, rel=1e-12)


def test_gaussian_is_the_beta_2_member():
    x = torch.randn(1000, generator=generator(1), dtype=torch.float64) * 0.3
    b, a = gaussian_fit(x)
    sigma = math.sqrt(float((x**2).mean()))
    assert b == 2.0 and a == pytest.approx(math.sqrt(2) * sigma)
    assert gg_log_likelihood(x, b, a) == pytest.approx(
        st.norm.logpdf(x.numpy(), scale=sigma).mean(), rel=1e-12
    )


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 4.0])
def test_sampler_moments_and_beta_recovery(beta):
    g = generator(7)
    x = sample_generalized_gaussian((40_000,), beta, 0.8, g)
    assert float(x.mean()) == pytest.approx(0.0, abs=0.02 * math.sqrt(gg_variance(beta, 0.8)))
    assert float(x.var()) == pytest.approx(gg_variance(beta, 0.8), rel=0.08 if beta < 1 else 0.035)
    fb, fa = fit_generalized_gaussian(x)
    assert fb == pytest.approx(beta, rel=0.05)
    assert fa == pytest.approx(0.8, rel=0.05)
    # the sample passes a KS test against scipy's gennorm
    assert st.kstest(x[:5000].numpy(), "gennorm", args=(beta, 0, 0.8)).pvalue > 1e-3


def test_fit_is_the_mle_and_matches_scipy():
    x = torch.from_numpy(st.gennorm.rvs(1.3, scale=0.5, size=4000, random_state=3))
    b, a = fit_generalized_gaussian(x)
    assert a == pytest.approx(scale_mle(x, b))
    best = gg_log_likelihood(x, b, a)
    for db in (-0.05, 0.05):  # profile maximum: neighbours are worse
        assert gg_log_likelihood(x, b + db, scale_mle(x, b + db)) < best
    sb, _, sa = st.gennorm.fit(x.numpy(), floc=0)
    assert b == pytest.approx(sb, rel=1e-3) and a == pytest.approx(sa, rel=1e-3)


def test_fitted_beta_outside_range_is_one_line_error():
    # two-point data: the likelihood grows without bound as beta -> infinity
    x = torch.tensor([-1.0, 1.0] * 50)
    with pytest.raises(ConfigError, match=r"outside .*valid range") as e:
        fit_generalized_gaussian(x)
    assert "\n" not in str(e.value)
    b, _ = fit_generalized_gaussian(x, check=False)
    assert b > BETA_MAX
    for bad in (0.0, -1.0, BETA_MIN / 2, BETA_MAX * 2, float("nan")):
        with pytest.raises(ConfigError, match="valid range"):
            get_initializer("generalized_gaussian", beta=bad)
    with pytest.raises(ConfigError, match="fitted beta"):
        get_initializer("generalized_gaussian", fit=x)  # the scheme refuses it too
    with pytest.raises(ConfigError):
        fit_generalized_gaussian(torch.zeros(10))


def test_scheme_he_variance_fitted_beta_and_determinism():
    src = torch.from_numpy(st.gennorm.rvs(1.0, scale=1.0, size=10000, random_state=0))
    init = get_initializer("generalized_gaussian", fit=src)
    assert init.beta == pytest.approx(1.0, rel=0.05)
    model = nn.Sequential(nn.Linear(400, 100), nn.ReLU(), nn.Linear(100, 10))
    initialize(model, init, seed=3)
    w = model[0].weight.detach().double()
    assert float(w.var()) == pytest.approx(2 / 400, rel=0.03)  # He variance
    assert fit_generalized_gaussian(w)[0] == pytest.approx(1.0, rel=0.06)
    again = nn.Sequential(nn.Linear(400, 100), nn.ReLU(), nn.Linear(100, 10))
    initialize(again, "generalized_gaussian", seed=3, fit=src)
    assert torch.equal(again[0].weight, model[0].weight)
    assert float(model[0].bias.detach().abs().sum()) == 0.0


def test_scale_for_std():
    for beta in (0.5, 1.0, 2.0, 3.0):
        assert gg_variance(beta, gg_scale_for_std(beta, 0.2)) == pytest.approx(0.04)
    assert gg_scale_for_std(2.0, 1.0) == pytest.approx(math.sqrt(2.0))
    assert np.isfinite(gg_scale_for_std(BETA_MIN, 1.0))
