"""RandomFeatureNet: samplers' moments, seeded determinism, the ridge readout against the
normal equations (primal and dual), the one-eigendecomposition ridge path, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import get_initializer
from weightlab.kernels.random_features import RandomFeatureNet
from weightlab.seeding import generator


def _data(n=30, d=4, o=2, seed=0):
    g = generator(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, o, generator=g, dtype=torch.float64)
    return x, y


def _normal_equations(phi, y, lam):
    a = phi.T @ phi + lam * torch.eye(phi.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, phi.T @ y)


@pytest.mark.parametrize("width", [10, 80])  # primal (N <= n) and dual (N > n) solves
def test_fit_ridge_equals_the_normal_equations(width):
    x, y = _data()
    net = RandomFeatureNet(4, width, seed=1)
    pred = net.fit_ridge(x, y, ridge=0.3)
    beta = _normal_equations(net.features(x), y, 0.3)
    assert net.readout.shape == (2, width)
    torch.testing.assert_close(net.readout.T, beta, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(pred, net(x), rtol=1e-9, atol=1e-11)
    net.fit_ridge(x, y[:, 0], ridge=0.3)  # 1-D targets: one output
    assert net(x).shape == (30, 1)


def test_ridge_zero_is_the_minimum_norm_least_squares_readout():
    x, y = _data(n=20)
    wide = RandomFeatureNet(4, 60, activation="tanh", seed=2)
    pred = wide.fit_ridge(x, y, ridge=0.0)
    torch.testing.assert_close(pred, y, atol=1e-8, rtol=0)  # N > n interpolates
    ref = torch.linalg.pinv(wide.features(x)) @ y
    torch.testing.assert_close(wide.readout.T, ref, atol=1e-8, rtol=1e-6)
    narrow = RandomFeatureNet(4, 8, seed=2)
    narrow.fit_ridge(x, y, ridge=0.0)
    phi = narrow.features(x)
    assert int((phi.abs().sum(0) == 0).sum()) == 1  # a dead ReLU feature: rank-deficient
    ref = torch.linalg.pinv(phi) @ y  # SVD pseudo-inverse: the minimum-norm solution
    torch.testing.assert_close(narrow.readout.T, ref, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("width", [12, 90])
def test_ridge_path_matches_one_fit_per_ridge_and_picks_the_best(width):
    x, y = _data(n=40, seed=3)
    xv, yv = _data(n=15, seed=4)
    xt, yt = _data(n=10, seed=5)
    ridges = [0.0, 1e-4, 1e-2, 1.0, 100.0]
    net = RandomFeatureNet(4, width, seed=6)
    path = net.ridge_path(x, y, xv, yv, ridges, x_test=xt, y_test=yt)
    ref = RandomFeatureNet(4, width, seed=6)
    for i, lam in enumerate(ridges):
        tr = ref.fit_ridge(x, y, lam)
        assert path.train_mse[i].item() == pytest.approx(((tr - y) ** 2).mean().item(), rel=1e-6)
        assert path.val_mse[i].item() == pytest.approx(
            ((ref(xv) - yv) ** 2).mean().item(), rel=1e-6
        )
        assert path.test_mse[i].item() == pytest.approx(
            ((ref(xt) - yt) ** 2).mean().item(), rel=1e-6
        )
    assert path.best == int(torch.argmin(path.val_mse))
    assert path.ridge == ridges[path.best]
    ref.fit_ridge(x, y, path.ridge)
    torch.testing.assert_close(net.readout, ref.readout, rtol=1e-6, atol=1e-9)


def test_seeded_determinism_and_the_global_rng_is_untouched():
    state = torch.get_rng_state()
    a = RandomFeatureNet(5, 50, seed=3)
    b = RandomFeatureNet(5, 50, seed=3)
    c = RandomFeatureNet(5, 50, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)
    assert [n for n, _ in a.named_parameters()] == ["readout"]
    assert {n for n, _ in a.named_buffers()} == {"weight", "bias"}
    assert a.weight.dtype == torch.float64
    f32 = RandomFeatureNet(5, 50, seed=3, dtype=torch.float32)
    assert f32.weight.dtype == torch.float32 and torch.equal(f32.weight, a.weight.float())


def test_sampler_moments():
    d, n = 16, 20000
    g = RandomFeatureNet(d, n, "gaussian", std=2.0, bias_std=0.5, seed=0)
    assert g.weight.mean().item() == pytest.approx(0.0, abs=0.01)
    assert g.weight.var().item() == pytest.approx(4.0 / d, rel=0.02)
    assert g.bias.var().item() == pytest.approx(0.25, rel=0.04)
    u = RandomFeatureNet(d, n, "uniform", bound=3.0, seed=0)
    for t in (u.weight, u.bias):
        assert t.abs().max().item() <= 3.0
        assert t.var().item() == pytest.approx(3.0, rel=0.04)  # B²/3
    m = RandomFeatureNet(d, n, "nonzero_mean", mean=2.0, seed=0)
    assert m.weight.mean().item() == pytest.approx(2.0 / math.sqrt(d), rel=0.01)
    assert m.weight.var().item() == pytest.approx(1.0 / d, rel=0.02)
    h = RandomFeatureNet(d, n, "he", seed=0)  # a registry scheme: its weight and zero bias
    assert h.weight.var().item() == pytest.approx(2.0 / d, rel=0.02)
    assert torch.all(h.bias == 0)
    s = RandomFeatureNet(d, 10, "glorot", dist="uniform", seed=0)
    assert s.weight.abs().max().item() <= math.sqrt(6.0 / (d + 10))
    const = RandomFeatureNet(3, 4, lambda shape, gen: torch.full(shape, 0.5), seed=0)
    assert torch.all(const.weight == 0.5) and torch.all(const.bias == 0.5)
    assert "shifted_normal" in {get_initializer("shifted_normal").name}


def test_relu_features_converge_to_the_arc_cosine_kernel():
    """(1/N)ΦΦᵀ → E[relu(wᵀx)relu(wᵀx')] = |x||x'|(sin θ + (π − θ)cos θ)/(2π d) for
    w ~ N(0, I/d) (Cho & Saul 2009, Eq. 6 with n = 1)."""
    x, _ = _data(n=4, d=3, seed=7)
    net = RandomFeatureNet(3, 200_000, bias=False, seed=0)
    phi = net.features(x)
    gram = phi @ phi.T
    nx = x.norm(dim=1)
    cos = ((x @ x.T) / torch.outer(nx, nx)).clamp(-1, 1)
    th = torch.arccos(cos)
    ref = torch.outer(nx, nx) * (torch.sin(th) + (math.pi - th) * cos) / (2 * math.pi * 3)
    torch.testing.assert_close(gram, ref, rtol=0.02, atol=0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight_sampler": "cauchy"}, "unknown weight_sampler"),
        ({"activation": "swishy"}, "unknown activation"),
        ({"width": 0}, "width must be a positive integer"),
        ({"width": -3}, "width must be a positive integer"),
        ({"weight_sampler": "uniform", "bound": 0.0}, "bound must be a positive"),
        ({"weight_sampler": "uniform", "bound": -1.0}, "bound must be a positive"),
        ({"bound": 1.0}, "bound applies to"),
        ({"weight_sampler": "lsuv"}, "draws data-free"),
    ],
)
def test_bad_configuration_is_one_line(kwargs, match):
    args = {"in_features": 3, "width": 10, **kwargs}
    with pytest.raises(ConfigError, match=match) as e:
        RandomFeatureNet(**args)
    assert "\n" not in str(e.value)


def test_bad_fit_input_is_one_line():
    x, y = _data()
    net = RandomFeatureNet(4, 10)
    with pytest.raises(ConfigError, match="ridge must be a finite number >= 0"):
        net.fit_ridge(x, y, -1e-3)
    with pytest.raises(ConfigError, match=r"expected \(n, 4\)"):
        net.features(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="ridge must be"):
        net.ridge_path(x, y, x, y, [1.0, -2.0])
    with pytest.raises(ConfigError, match="do not match 30 inputs"):
        net.fit_ridge(x, y[:5], 1.0)


def test_ridge_path_on_given_features_slices_nested_widths():
    """Nested features (the first N columns of one wide net) through ridge_path_features
    give the same path as a net whose features are those columns."""
    from weightlab.kernels.random_features import ridge_path_features

    x, y = _data(n=25, seed=8)
    xv, yv = _data(n=10, seed=9)
    net = RandomFeatureNet(4, 40, seed=1, normalize=False)
    cols = slice(0, 15)
    path = ridge_path_features(
        net.features(x)[:, cols], y, net.features(xv)[:, cols], yv, [0.1, 1.0]
    )
    small = RandomFeatureNet(4, 15, seed=1, normalize=False)
    small.weight.copy_(net.weight[cols])
    small.bias.copy_(net.bias[cols])
    ref = small.ridge_path(x, y, xv, yv, [0.1, 1.0])
    torch.testing.assert_close(path.val_mse, ref.val_mse)
    torch.testing.assert_close(path.coef, small.readout.T.detach())
    with pytest.raises(ConfigError, match="do not have 15 columns"):
        ridge_path_features(net.features(x)[:, cols], y, net.features(xv), yv, [1.0])


def test_ridge_path_kernel_equals_kernel_ridge_per_ridge():
    """The kernel path at each λ equals C's kernel_ridge (a Cholesky solve per λ)."""
    from weightlab.kernels.random_features import ridge_path_kernel
    from weightlab.kernels.regression import kernel_ridge

    x, y = _data(n=30, seed=10)
    xv, yv = _data(n=12, seed=11)
    k = torch.exp(-(torch.cdist(x, x) ** 2) / 4)
    kv = torch.exp(-(torch.cdist(xv, x) ** 2) / 4)
    ridges = [1e-3, 1e-1, 10.0]
    path = ridge_path_kernel(k, y, kv, yv, ridges, kv, yv)
    for i, lam in enumerate(ridges):
        pred = kernel_ridge(k, y, kv, ridge=lam)
        assert path.val_mse[i].item() == pytest.approx(((pred - yv) ** 2).mean().item(), rel=1e-8)
    torch.testing.assert_close(path.test_mse, path.val_mse)
    alpha = torch.linalg.solve(k + path.ridge * torch.eye(30, dtype=torch.float64), y)
    torch.testing.assert_close(path.coef, alpha, rtol=1e-7, atol=1e-9)
    with pytest.raises(ConfigError, match="k_train must be square"):
        ridge_path_kernel(kv, yv, kv, yv, ridges)
