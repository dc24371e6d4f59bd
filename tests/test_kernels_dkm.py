"""The deep kernel machine of weightlab.kernels.dkm [#63]: the arc-cosine Gram map, the NNGP
prior and the ν → ∞ limit, the objective's ascent, test-point conditioning, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.dkm import DeepKernelMachine, input_gram, relu_gram_map
from weightlab.kernels.regression import kernel_ridge
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(p=16, d=3, c=2, seed=0):
    g = generator(seed)
    x = torch.randn(p, d, generator=g, dtype=torch.float64)
    y = torch.stack([torch.sin(x.sum(1)), torch.tanh(x[:, 0] * x[:, 1])], 1)[:, :c]
    return x, y


def test_relu_gram_map_matches_monte_carlo_and_its_diagonal():
    g = torch.tensor([[2.0, 0.9, -0.5], [0.9, 1.0, 0.2], [-0.5, 0.2, 0.7]], dtype=torch.float64)
    z = torch.randn(400_000, 3, generator=generator(0), dtype=torch.float64)
    u = torch.relu(z @ torch.linalg.cholesky(g).T)
    mc = 1.3**2 * (u.T @ u) / len(u) + 0.2**2
    got = relu_gram_map(g, 1.3, 0.2)
    assert torch.allclose(got, mc, rtol=0.02, atol=0.01)
    assert torch.allclose(torch.diagonal(got), 1.3**2 * torch.diagonal(g) / 2 + 0.04)
    # the derivative at perfectly correlated inputs is finite (custom backward)
    gg = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    relu_gram_map(gg).sum().backward()
    assert bool(torch.isfinite(gg.grad).all())


def test_prior_is_the_stax_nngp():
    x, _ = _data()
    prior = relu_gram_map(relu_gram_map(input_gram(x, None, 1.4, 0.3), 1.4, 0.3), 1.4, 0.3)
    try:
        from weightlab.kernels.analytic import fc_kernels
    except ImportError:
        pytest.skip("weightlab.kernels.analytic has not landed")
    ref = fc_kernels(x, depth=2, w_std=1.4, b_std=0.3).nngp
    assert torch.allclose(prior, ref, rtol=1e-9, atol=1e-12)


def test_at_the_prior_the_dkm_is_nngp_regression():
    x, y = _data()
    xt, _ = _data(7, seed=1)
    dkm = DeepKernelMachine(x, y, depth=2, nu=1.0, noise=0.05, w_std=1.4, b_std=0.3)
    loglik, kls = dkm.terms()
    assert all(abs(float(k.detach())) < 1e-8 for k in kls)
    k = relu_gram_map(relu_gram_map(input_gram(x, None, 1.4, 0.3), 1.4, 0.3), 1.4, 0.3)
    kt = input_gram(xt, x, 1.4, 0.3)
    # the test-train NNGP block by the same recursion over [train; test]
    xa = torch.cat([x, xt])
    ka = relu_gram_map(relu_gram_map(input_gram(xa, None, 1.4, 0.3), 1.4, 0.3), 1.4, 0.3)
    kt = ka[16:, :16]
    mean, var = dkm.predict(xt)
    assert torch.allclose(mean, kernel_ridge(k, y, kt, 0.05), atol=1e-9)
    assert var.shape == (7,) and bool((var > 0).all())
    assert dkm.prior_distance() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_fit_never_lowers_the_objective_and_nu_pins_the_grams():
    x, y = _data(20)
    loose = DeepKernelMachine(x, y, depth=2, nu=0.2, noise=0.01)
    hist = loose.fit(steps=15)
    assert len(hist) == 16 and hist[-1] > hist[0] + 1e-3
    assert all(b >= a - 1e-9 for a, b in zip(hist, hist[1:], strict=False))
    tight = DeepKernelMachine(x, y, depth=2, nu=1e5, noise=0.01)
    tight.fit(steps=15)
    far, near = loose.prior_distance(), tight.prior_distance()
    assert max(near) < 1e-3 < min(far)
    assert max(near) < 0.05 * min(far)


def test_test_point_conditioning_is_exact_at_the_training_points():
    x, y = _data(12)
    dkm = DeepKernelMachine(x, y, depth=2, nu=0.5, noise=0.02)
    dkm.fit(steps=5)
    g2 = dkm.grams()[-1]
    k = relu_gram_map(g2)
    train_fit = k @ torch.linalg.solve(k + 0.02 * torch.eye(12, dtype=torch.float64), y)
    mean, _ = dkm.predict(x)
    assert torch.allclose(mean, train_fit, atol=1e-6)


def test_bad_input():
    x, y = _data()
    with pytest.raises(ConfigError, match="x_train has 16 rows"):
        DeepKernelMachine(x, y[:5])
    with pytest.raises(ConfigError, match="nu must be"):
        DeepKernelMachine(x, y, nu=[1.0])
    with pytest.raises(ConfigError, match="depth"):
        DeepKernelMachine(x, y, depth=0)
    with pytest.raises(ConfigError, match="x_test"):
        DeepKernelMachine(x, y).predict(torch.ones(2, 5, dtype=torch.float64))
    with pytest.raises(ConfigError, match="noise"):
        DeepKernelMachine(x, y, noise=-1.0)
    assert math.isfinite(float(DeepKernelMachine(x, y).objective().detach()))
