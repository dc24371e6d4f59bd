"""Kernel models of weightlab.kernels.regression: known answers and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.regression import (
    cholesky_factor,
    cholesky_solve,
    gp_posterior,
    jitter_schedule,
    kernel_ridge,
    ntk_gp_mean,
)


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def test_cholesky_solve_matches_dense_solve_for_vectors_and_matrices():
    k = _spd(6)
    b = torch.arange(6, dtype=torch.float64)
    assert torch.allclose(cholesky_solve(k, b), torch.linalg.solve(k, b), atol=1e-12)
    bb = torch.stack([b, b**2], 1)
    x = cholesky_solve(k, bb)
    assert x.shape == (6, 2)
    assert torch.allclose(k @ x, bb, atol=1e-10)


def test_cholesky_escalates_jitter_on_a_singular_psd_matrix():
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    k = torch.outer(v, v)  # rank 1: plain Cholesky fails
    factor, used = cholesky_factor(k)
    assert used > 0
    assert used in jitter_schedule(k)
    assert torch.allclose(factor @ factor.T, k + used * torch.eye(3, dtype=torch.float64))
    # The first schedule entries: 0, then 1e-10 * mean diag.
    sched = jitter_schedule(k)
    assert sched[0] == 0.0 and math.isclose(sched[1], 1e-10 * 14 / 3)
    assert math.isclose(sched[-1], 1e-4 * 14 / 3)


def test_not_positive_definite_names_the_largest_jitter():
    k = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"not positive definite even with jitter 0\.0001"):
        cholesky_solve(k, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"jitter 0\.5"):
        cholesky_solve(k, torch.ones(2, dtype=torch.float64), jitter=0.5)


def test_kernel_ridge_hand_computed():
    k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ks = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # K^{-1} y = [2/3, -1/3]; (K + I)^{-1} y = [3/8, -1/8]
    assert torch.allclose(kernel_ridge(k, y, ks), torch.tensor([2 / 3], dtype=torch.float64))
    assert torch.allclose(kernel_ridge(k, y, ks, 1.0), torch.tensor([3 / 8], dtype=torch.float64))
    two = kernel_ridge(k, torch.stack([y, 2 * y], 1), ks)
    assert two.shape == (1, 2) and torch.allclose(two[0, 1], 2 * two[0, 0])


def test_gp_posterior_one_training_point():
    k = torch.tensor([[1.0]], dtype=torch.float64)
    mean, var = gp_posterior(
        k,
        torch.tensor([2.0], dtype=torch.float64),
        torch.tensor([[0.5]], dtype=torch.float64),
        torch.tensor([1.0], dtype=torch.float64),
        0.5,
    )
    assert torch.allclose(mean, torch.tensor([2 / 3], dtype=torch.float64))
    assert torch.allclose(var, torch.tensor([5 / 6], dtype=torch.float64))
    _, var_y = gp_posterior(
        k,
        torch.tensor([2.0], dtype=torch.float64),
        torch.tensor([[0.5]], dtype=torch.float64),
        torch.tensor([1.0], dtype=torch.float64),
        0.5,
        include_noise=True,
    )
    assert torch.allclose(var_y, torch.tensor([5 / 6 + 0.5], dtype=torch.float64))


def test_gp_posterior_interpolates_training_points_without_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    k = torch.exp(-(torch.cdist(x, x) ** 2))
    y = torch.sin(x.sum(1))
    mean, var = gp_posterior(k, y, k, torch.ones(8, dtype=torch.float64), 0.0)
    assert torch.allclose(mean, y, atol=1e-6)
    assert float(var.abs().max()) < 1e-6


def test_ntk_gp_mean_scalar_closed_form():
    theta = torch.tensor([[2.0]], dtype=torch.float64)
    y = torch.tensor([1.5], dtype=torch.float64)
    f0 = torch.tensor([0.5], dtype=torch.float64)
    out = ntk_gp_mean(
        theta,
        torch.tensor([[1.0]], dtype=torch.float64),
        y,
        t=3.0,
        lr=0.1,
        f0_train=f0,
        f0_test=torch.tensor([0.25], dtype=torch.float64),
    )
    # f* = f0* + (theta*/theta)(1 - exp(-lr theta t))(y - f0)
    expect = 0.25 + 0.5 * (1 - math.exp(-0.6)) * 1.0
    assert math.isclose(float(out), expect, rel_tol=1e-12)
    # t = 0 gives f0 and t = inf gives kernel regression.
    assert math.isclose(float(ntk_gp_mean(theta, theta, y, 0.0, f0_train=f0, f0_test=f0)), 0.5)
    assert math.isclose(float(ntk_gp_mean(theta, theta, y, math.inf)), 1.5)


def _linear_model(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    phi_train = torch.randn(5, 12, generator=g, dtype=torch.float64)
    phi_test = torch.randn(3, 12, generator=g, dtype=torch.float64)
    w0 = torch.randn(12, generator=g, dtype=torch.float64)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    return phi_train, phi_test, w0, y


def test_gd_on_a_linear_model_equals_the_discrete_closed_form():
    xtr, xte, w0, y = _linear_model()
    theta, theta_s = xtr @ xtr.T, xte @ xtr.T
    lr = 0.5 / float(torch.linalg.eigvalsh(theta).max())
    w = w0.clone()
    for _ in range(37):
        w = w - lr * xtr.T @ (xtr @ w - y)  # gradient of 1/2 ||f - y||^2
    pred = ntk_gp_mean(
        theta, theta_s, y, 37, lr=lr, f0_train=xtr @ w0, f0_test=xte @ w0, discrete=True
    )
    assert torch.allclose(pred, xte @ w, atol=1e-10)


def test_small_step_gd_approaches_gradient_flow_and_inf_is_kernel_regression():
    xtr, xte, w0, y = _linear_model(2)
    theta, theta_s = xtr @ xtr.T, xte @ xtr.T
    lr, steps = 1e-3 / float(torch.linalg.eigvalsh(theta).max()), 3000
    w = w0.clone()
    for _ in range(steps):
        w = w - lr * xtr.T @ (xtr @ w - y)
    flow = ntk_gp_mean(theta, theta_s, y, steps, lr=lr, f0_train=xtr @ w0, f0_test=xte @ w0)
    assert torch.allclose(flow, xte @ w, rtol=2e-3, atol=2e-3)
    inf = ntk_gp_mean(theta, theta_s, y, math.inf)
    assert torch.allclose(inf, kernel_ridge(theta, y, theta_s), atol=1e-10)
    late = ntk_gp_mean(theta, theta_s, y, 1e7, lr=1.0)
    assert torch.allclose(late, inf, atol=1e-6)


def test_ntk_gp_mean_multi_output_and_singular_kernel_at_finite_t():
    v = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    theta = v @ v.T  # singular: the null direction keeps eta*t weight, no inverse needed
    y = torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    out = ntk_gp_mean(theta, theta, y, 5.0, lr=0.01)
    assert out.shape == (2, 2) and bool(torch.isfinite(out).all())


def test_bad_input_one_line_errors():
    k = _spd(3)
    y = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="t must be >= 0"):
        ntk_gp_mean(k, k, y, -1.0)
    with pytest.raises(ConfigError, match="kernel has 3 rows"):
        kernel_ridge(k, torch.ones(4, dtype=torch.float64), k)
    with pytest.raises(ConfigError, match=r"shape \(m, 3\)"):
        kernel_ridge(k, y, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ConfigError, match="square"):
        cholesky_solve(torch.ones(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match="k_test_diag"):
        gp_posterior(k, y, k, torch.ones(2, dtype=torch.float64), 0.1)
    with pytest.raises(ConfigError, match="noise"):
        gp_posterior(k, y, k, torch.ones(3, dtype=torch.float64), -0.1)
    with pytest.raises(ConfigError, match="f0_train"):
        ntk_gp_mean(k, k, y, 1.0, f0_train=torch.ones(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match="ridge"):
        kernel_ridge(k, y, k, ridge=-1.0)
    try:
        ntk_gp_mean(k, k, y, -1.0)
    except ConfigError as exc:
        assert "\n" not in str(exc)
