"""Deep linear nets: decoupled balanced starts, mode read-out, the analytic sigmoid, and the
MLP's ``linear`` activation (module, population fast path and loop agree)."""

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.deep_linear import (
    decoupled_balanced_init,
    half_time,
    mode_strength_sigmoid,
    mode_strengths,
    product,
)
from weightlab.init.registry import orthogonal


def _uv(d_in=6, d_out=5, r=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return orthogonal(d_in, d_in, g)[:, :r], orthogonal(d_out, d_out, g)[:, :r]


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_balanced_init_has_the_requested_product_and_is_balanced(depth):
    u, v = _uv()
    a = torch.tensor([3.0, 2.0, 0.5, 1e-3], dtype=torch.float64)
    ws = decoupled_balanced_init(
        u, v, a, depth, hidden=7, generator=torch.Generator().manual_seed(1)
    )
    assert [tuple(w.shape) for w in ws][0][1] == 6 and ws[-1].shape[0] == 5
    assert torch.allclose(product(ws), (v * a) @ u.T, atol=1e-12)
    assert torch.allclose(mode_strengths(ws, u, v), a, atol=1e-12)
    for lo, hi in zip(ws[:-1], ws[1:], strict=True):  # W_{l+1}^T W_{l+1} = W_l W_l^T
        assert torch.allclose(hi.T @ hi, lo @ lo.T, atol=1e-12)
    # every layer carries a^(1/D): its singular values
    sv = torch.linalg.svdvals(ws[0])[:4]
    assert torch.allclose(sv, a.pow(1 / depth), atol=1e-12)


def test_balanced_init_bad_input():
    u, v = _uv()
    with pytest.raises(ConfigError, match="hidden width"):
        decoupled_balanced_init(u, v, 1.0, 2, hidden=3)
    with pytest.raises(ConfigError, match=">= 0"):
        decoupled_balanced_init(u, v, -1.0, 2)
    with pytest.raises(ConfigError, match="same r"):
        decoupled_balanced_init(u, v[:, :2], 1.0, 2)


def test_sigmoid_known_values_and_ode():
    s, a0, tau = 3.0, 1e-3, 2.0
    assert float(mode_strength_sigmoid(0.0, s, a0, tau)) == pytest.approx(a0)
    assert float(mode_strength_sigmoid(1e4, s, a0, tau)) == pytest.approx(s)
    th = half_time(s, a0, tau)
    assert th == pytest.approx(tau / (2 * s) * math.log(s / a0 - 1))
    assert float(mode_strength_sigmoid(th, s, a0, tau)) == pytest.approx(s / 2)
    # it solves τ da/dt = 2a(s − a)
    t = torch.linspace(0.0, 5.0, 11, dtype=torch.float64)
    h = 1e-6
    a = mode_strength_sigmoid(t, s, a0, tau)
    da = (mode_strength_sigmoid(t + h, s, a0, tau) - mode_strength_sigmoid(t - h, s, a0, tau)) / (
        2 * h
    )
    assert torch.allclose(tau * da, 2 * a * (s - a), rtol=1e-5, atol=1e-8)
    assert float(mode_strength_sigmoid(2.0, 0.0, 0.5)) == pytest.approx(0.5 / (1 + 2 * 0.5 * 2))


def test_gradient_descent_on_a_whitened_task_follows_the_sigmoid():
    """Discrete GD (the exact update, λ·s = 0.01) on ½‖W_tot − V S Uᵀ‖² from a balanced
    two-layer start stays within 1% of s of the sigmoid."""
    u, v = _uv(4, 4, 4)
    s = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    target = (v * s) @ u.T
    w1, w2 = decoupled_balanced_init(u, v, 1e-3, 2, hidden=4, generator=torch.Generator())
    lam = 0.005
    for step in range(1, 3001):
        e = target - w2 @ w1
        w1, w2 = w1 + lam * w2.T @ e, w2 + lam * e @ w1.T
        if step % 100 == 0:
            got = mode_strengths([w1, w2], u, v)[:3]
            want = torch.stack([mode_strength_sigmoid(step * lam, float(x), 1e-3) for x in s[:3]])
            assert torch.all((got - want).abs() <= 0.01 * s[:3])


def test_linear_activation_module_fast_path_and_loop_agree():
    from weightlab.data import load_dataset
    from weightlab.models.factory import model_factory
    from weightlab.models.mlp import ACTIVATIONS, MLP
    from weightlab.population import MemberSpec, Population
    from weightlab.population.mlp_engine import supports
    from weightlab.train import train
    from weightlab.train.config import OptimConfig, TrainConfig

    x = torch.randn(3, 5)
    assert torch.equal(ACTIVATIONS["linear"](x), x)
    m = MLP([5, 4, 3], activation="linear")
    assert supports(m)
    assert torch.allclose(m(x), m.layers[1](m.layers[0](x)))
    data = load_dataset(
        "deep_linear", "cpu", d_in=5, d_out=3, n_train=40, n_val=8, n_test=8, singular_values=[2, 1]
    )
    factory = model_factory(MLP, [5, 6, 6, 3], activation="linear")
    cfg = TrainConfig(3, 10, 2, OptimConfig("sgd", lr=0.05, momentum=0.9))
    pop = Population(factory, [MemberSpec(seed=s) for s in (0, 1)])
    res = pop.fit(data, cfg)
    for s in (0, 1):
        model = factory(s)
        ref = train(model, data, cfg, 0, seed=s)
        assert [p.train_loss for p in res[s].history] == pytest.approx(
            [p.train_loss for p in ref.history], rel=1e-5
        )
        for k, t in model.state_dict().items():
            assert torch.allclose(pop.state(s)[k], t, atol=1e-5)
