"""The inductive-bias estimator: bits of tasks where P(L <= eps) is known in closed form, the
named loss models, the random-feature hypothesis samplers, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from weightlab.errors import ConfigError
from weightlab.kernels.inductive_bias import (
    fourier_feature_hypotheses,
    inductive_bias_bits,
    median_bandwidth,
    relu_feature_hypotheses,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = tuple(torch.zeros(4, 1) for _ in range(4))  # unused by the toy samplers


def constant_hypotheses(task, count, g):
    """h = c with c ~ N(0, 1) on targets y = 0: L = c² ~ χ²_1, P(L <= eps) = erf(sqrt(eps/2))."""
    return torch.randn(count, generator=g, dtype=torch.float64).square()


def test_bits_of_a_task_with_known_probability():
    eps = 0.05
    exact = -math.log2(math.erf(math.sqrt(eps / 2)))  # 2.33 bits
    r = inductive_bias_bits(
        constant_hypotheses, TASK, eps, num_hypotheses=20000, seed=1, model="scaled_chi2"
    )
    assert r.consistent and r.consistency_p > 1e-3
    assert r.model == "scaled_chi2" and "chi-square" in r.model_description
    assert r.params["k"] == pytest.approx(1.0, rel=0.06)
    assert r.params["scale"] == pytest.approx(1.0, rel=0.06)
    assert r.bits == pytest.approx(exact, abs=0.1)
    emp = inductive_bias_bits(
        constant_hypotheses, TASK, eps, num_hypotheses=20000, seed=1, model="empirical"
    )
    assert emp.bits == pytest.approx(exact, abs=0.1)
    assert emp.empirical_fraction == pytest.approx(2**-emp.bits)


def test_lognormal_model_on_lognormal_losses():
    def sampler(task, count, g):
        return torch.exp(1.0 + 0.5 * torch.randn(count, generator=g, dtype=torch.float64))

    eps = math.exp(1.0 - 2 * 0.5)  # two sigmas below: P = Phi(-2)
    r = inductive_bias_bits(sampler, TASK, eps, num_hypotheses=20000)
    assert r.model == "lognormal" and r.consistent
    assert r.bits == pytest.approx(-math.log2(stats.norm.cdf(-2.0)), abs=0.1)
    assert r.params["mu"] == pytest.approx(1.0, abs=0.02)


def test_deterministic_and_batch_independent():
    a = inductive_bias_bits(constant_hypotheses, TASK, 0.1, num_hypotheses=300, batch=7)
    b = inductive_bias_bits(constant_hypotheses, TASK, 0.1, num_hypotheses=300, batch=7)
    assert a == b and a.num_hypotheses == 300


def _teacher(d, n_train=64, n_test=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, 1, generator=g, dtype=torch.float64)
    xtr = torch.randn(n_train, d, generator=g, dtype=torch.float64)
    xte = torch.randn(n_test, d, generator=g, dtype=torch.float64)
    f = lambda x: torch.relu(x @ w) / math.sqrt(d)  # noqa: E731
    return xtr, f(xtr), xte, f(xte)


def test_relu_features_least_squares_readout():
    task = _teacher(4)
    # with as many features as training points (and a relu teacher) the readout interpolates
    sampler = relu_feature_hypotheses(64)
    g = torch.Generator().manual_seed(0)
    losses = sampler(task, 5, g)
    assert losses.shape == (5,) and bool((losses >= 0).all())
    # a single hypothesis refitted by hand gives the same test MSE
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    small = relu_feature_hypotheses(8, ridge=0.0)(task, 1, g1)
    w = torch.randn((1, 4, 8), generator=g2, dtype=torch.float64) / 2.0
    ftr, fte = torch.relu(task[0] @ w[0]), torch.relu(task[2] @ w[0])
    coef = torch.linalg.lstsq(ftr, task[1]).solution
    assert float(small) == pytest.approx(float((fte @ coef - task[3]).square().mean()), rel=1e-6)


def test_bits_rise_with_dimension_on_a_teacher_task():
    bits = []
    for d in (2, 16):
        task = _teacher(d)
        eps = 0.5 * float(task[3].var())
        bits.append(
            inductive_bias_bits(relu_feature_hypotheses(16), task, eps, num_hypotheses=200).bits
        )
    assert bits[1] > bits[0]


def test_fourier_features_and_median_bandwidth():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert median_bandwidth(x) == pytest.approx(2.0)  # distances 1, 2, 3
    losses = fourier_feature_hypotheses(32)(_teacher(3), 4, torch.Generator().manual_seed(0))
    assert losses.shape == (4,) and bool(torch.isfinite(losses).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": 0.0}, "eps must be a loss level > 0"),
        ({"eps": -1.0}, "eps must be a loss level > 0"),
        ({"eps": float("nan")}, "eps must be a loss level > 0"),
        ({"model": "gamma"}, "unknown loss model"),
        ({"num_hypotheses": 1}, "num_hypotheses must be >= 2"),
    ],
)
def test_bad_input_is_one_line(kwargs, match):
    args = {"eps": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=match) as e:
        inductive_bias_bits(constant_hypotheses, TASK, **args)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="must be > 0"):
        relu_feature_hypotheses(0)


def test_a_model_that_misplaces_the_resolved_mass_is_flagged():
    # losses with a hard floor at 1 and a long tail: the lognormal fit puts mass below
    # eps = 0.9 that the sample shows is not there
    def floored(task, count, g):
        return 1.0 + torch.rand(count, generator=g, dtype=torch.float64).pow(8) * 100

    r = inductive_bias_bits(floored, TASK, 0.9, num_hypotheses=2000)
    assert r.empirical_fraction == 0.0 and 2.0**-r.bits * 2000 > 20
    assert not r.consistent and r.consistency_p < 1e-3
