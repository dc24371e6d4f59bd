"""The Student-t process of weightlab.kernels.student_t [#57]: its marginal likelihood against
scipy's multivariate t, its predictive against the joint marginal, the GP limit, fitting, and
the sampler of wide nets with an inverse-gamma last-layer variance."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from weightlab.errors import ConfigError
from weightlab.kernels.student_t import (
    fit_best,
    fit_gp,
    fit_student_t,
    gp_log_marginal,
    gp_predictive,
    sample_inverse_gamma,
    sample_scale_mixture_outputs,
    student_t_log_marginal,
    student_t_process,
)
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _relu_nngp(x1: torch.Tensor, x2: torch.Tensor, w_std=1.0, b_std=0.5) -> torch.Tensor:
    """Private 1-hidden-layer ReLU NNGP (arc-cosine, stax convention) for these tests."""
    d = x1.shape[1]

    def k0(u, v):
        return w_std**2 * (u @ v.T) / d + b_std**2

    k12 = k0(x1, x2)
    n1 = k0(x1, x1).diagonal().sqrt()
    n2 = k0(x2, x2).diagonal().sqrt()
    cos = (k12 / torch.outer(n1, n2)).clamp(-1, 1)
    th = torch.arccos(cos)
    e = torch.outer(n1, n2) * (torch.sin(th) + (math.pi - th) * cos) / (2 * math.pi)
    return w_std**2 * e + b_std**2


def _data(n=12, seed=0):
    g = generator(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def test_log_marginal_equals_scipy_multivariate_t():
    x, y = _data()
    k = _relu_nngp(x, x)
    a, b, noise = 1.7, 0.6, 0.05
    ours = float(student_t_log_marginal(k, y, a, b, noise))
    shape = (b / a) * (k + noise * torch.eye(len(x), dtype=torch.float64))
    ref = stats.multivariate_t(loc=None, shape=shape.numpy(), df=2 * a).logpdf(y.numpy())
    assert ours == pytest.approx(ref, rel=1e-10)
    gp = float(gp_log_marginal(k, y, 0.7, noise))
    cov = 0.7 * (k + noise * torch.eye(len(x), dtype=torch.float64))
    assert gp == pytest.approx(stats.multivariate_normal(cov=cov.numpy()).logpdf(y.numpy()))


def test_predictive_is_the_conditional_of_the_joint_marginal():
    x, y = _data()
    xs = torch.tensor([[0.3], [1.7]], dtype=torch.float64)
    ys = torch.tensor([0.2, -0.4], dtype=torch.float64)
    a, b, noise = 2.5, 1.2, 0.03
    k, ks, kss = _relu_nngp(x, x), _relu_nngp(xs, x), _relu_nngp(xs, xs).diagonal()
    pred = student_t_process(k, y, ks, kss, a, b, noise)
    assert pred.dof == 2 * a + len(x)
    logp = pred.log_density(ys)
    base = student_t_log_marginal(k, y, a, b, noise)
    for i in range(2):
        xa = torch.cat([x, xs[i : i + 1]])
        ya = torch.cat([y, ys[i : i + 1]])
        joint = student_t_log_marginal(_relu_nngp(xa, xa), ya, a, b, noise)
        assert float(logp[i]) == pytest.approx(float(joint - base), rel=1e-9)


def test_large_a_with_fixed_mean_scale_is_the_gp():
    x, y = _data()
    xs = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(1)
    k, ks, kss = _relu_nngp(x, x), _relu_nngp(xs, x), _relu_nngp(xs, xs).diagonal()
    a = 1e7
    pred = student_t_process(k, y, ks, kss, a, a * 0.8, 0.02)
    mean, var = gp_predictive(k, y, ks, kss, 0.8, 0.02)
    assert torch.allclose(pred.loc, mean)
    assert torch.allclose(pred.scale**2, var, rtol=1e-5)


def test_fit_gp_reaches_the_closed_form_signal():
    x, y = _data(20, 1)
    k = _relu_nngp(x, x)
    fit = fit_gp(k, y)
    # at the optimum the signal variance is q(noise)/n for the fitted noise
    c = k + fit.noise * torch.eye(20, dtype=torch.float64)
    q = float(y @ torch.linalg.solve(c, y))
    assert fit.signal == pytest.approx(q / 20, rel=1e-4)
    assert fit.log_marginal == pytest.approx(float(gp_log_marginal(k, y, fit.signal, fit.noise)))
    t = fit_student_t(k, y, steps=100)
    start = float(student_t_log_marginal(k, y, 2.0, 1.0, 0.1))
    assert t.log_marginal >= start
    # a perturbation of the fitted (a, b, noise) does not improve the marginal likelihood
    for da, db, dn in ((1.05, 1, 1), (1, 1.05, 1), (1, 1, 1.05), (0.95, 0.95, 0.95)):
        assert (
            t.log_marginal
            >= float(student_t_log_marginal(k, y, t.a * da, t.b * db, t.noise * dn)) - 1e-7
        )
    cands = [_relu_nngp(x, x, b_std=s) for s in (0.1, 0.5, 2.0)]
    i, best = fit_best(cands, y, fit_gp)
    assert i in (0, 1, 2) and best.log_marginal >= fit.log_marginal - 1e-6


def test_inverse_gamma_sampler_moments():
    s = sample_inverse_gamma(5.0, 2.0, 20000, generator(3))
    assert float(s.mean()) == pytest.approx(2.0 / 4.0, rel=0.02)
    ks = stats.kstest(s.numpy(), stats.invgamma(5.0, scale=2.0).cdf).statistic
    assert ks < 0.015


def test_wide_nets_with_random_last_layer_scale_are_student_t():
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    a, b = 2.0, 1.0
    out = sample_scale_mixture_outputs(x, 2000, 256, a, b, w_std=1.2, b_std=0.3, seed=0)
    assert out.shape == (2000, 1)
    kxx = float(_relu_nngp(x, x, w_std=1.2, b_std=0.3))
    scale = math.sqrt(b / a * kxx)
    d_t = stats.kstest(out[:, 0].numpy(), stats.t(df=2 * a, scale=scale).cdf).statistic
    sd = math.sqrt(scale**2 * 2 * a / (2 * a - 2))
    d_g = stats.kstest(out[:, 0].numpy(), stats.norm(scale=sd).cdf).statistic
    assert d_t < 0.035 < d_g
    again = sample_scale_mixture_outputs(x, 2000, 256, a, b, w_std=1.2, b_std=0.3, seed=0)
    assert torch.equal(out, again)


def test_bad_input():
    x, y = _data()
    k = _relu_nngp(x, x)
    with pytest.raises(ConfigError, match="a must be"):
        student_t_process(k, y, k, k.diagonal(), -1.0, 1.0, 0.1)
    with pytest.raises(ConfigError, match="kernel has 12 rows"):
        student_t_log_marginal(k, y[:5], 1.0, 1.0, 0.1)
    with pytest.raises(ConfigError, match="not positive definite"):
        student_t_log_marginal(-k, y, 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="width"):
        sample_scale_mixture_outputs(x, 10, 0, 1.0, 1.0)
