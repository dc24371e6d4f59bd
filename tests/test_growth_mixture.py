"""MixtureGrowth templates (weightlab.growth.mixture): template mixing, growth grid, errors."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.growth.mixture import (
    Block,
    TemplateLinear,
    TemplateMLP,
    mixture_grow,
    orthogonal_coefficients,
)
from weightlab.models import build


def _pair(widths=(40, 16, 12, 10), k=2, act="relu"):
    a = build(TemplateMLP, list(widths), num_templates=k, activation=act, seed=1)
    b = build(TemplateMLP, list(widths), num_templates=k, activation=act, seed=2)
    return a, b


def test_weight_is_the_coefficient_mixture_of_the_templates():
    layer = build(TemplateLinear, 7, 5, num_templates=3, seed=0)
    t, c = layer.templates[0], layer.coefficients[0]
    want = c[0] * t[0] + c[1] * t[1] + c[2] * t[2]
    torch.testing.assert_close(layer.weight, want)
    x = torch.randn(4, 7)
    torch.testing.assert_close(layer(x), x @ want.T + layer.bias)
    assert sorted(n for n, _ in layer.named_parameters()) == [
        "bias",
        "coefficients_0",
        "templates_0",
    ]


def test_init_like_nn_linear_with_unit_norm_orthogonal_coefficients():
    # nn.Linear: U(±1/√fan_in), variance 1/(3 fan_in); ‖c‖ = 1 keeps it for W = Σ c_k T_k.
    fan_in = 400
    layer = build(TemplateLinear, fan_in, 300, num_templates=2, seed=5)
    bound = 1 / math.sqrt(fan_in)
    assert layer.templates[0].abs().max() <= bound and layer.bias.abs().max() <= bound
    assert float(layer.coefficients[0].detach().norm()) == pytest.approx(1.0, abs=1e-6)
    ratio = float(layer.weight.detach().var()) * 3 * fan_in
    assert ratio == pytest.approx(1.0, abs=0.02)
    # A grid of several blocks of one set takes distinct rows of one orthogonal K × K matrix.
    k = 3
    ts = [torch.zeros(k, 2, 2)]
    grid = [[Block("mix", 0, 0), Block("mix", 1, 0)], [Block("mix", 2, 0), Block("mix", 0, 0)]]
    g = TemplateLinear.from_blocks(
        (2, 2), (2, 2), grid, ts, [torch.zeros(k)] * 3, [], torch.zeros(4)
    )
    g.reset_parameters(torch.Generator().manual_seed(0))
    c = torch.stack(g.coefficients)
    torch.testing.assert_close(c @ c.T, torch.eye(3), atol=1e-6, rtol=0)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a1 = build(TemplateMLP, [40, 16, 10], seed=3)
    a2 = build(TemplateMLP, [40, 16, 10], seed=3)
    b = build(TemplateMLP, [40, 16, 10], seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (n, p), (_, q), (_, r) in zip(
        a1.named_parameters(), a2.named_parameters(), b.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), n
        assert not torch.equal(p, r), n


def test_mixture_grow_builds_the_block_grid():
    a, b = _pair()
    g = mixture_grow(a, b)
    assert g.widths == [40, 32, 24, 10]
    n1, n2 = 16, 12
    # first layer [[A], [B]]
    w0 = g.layers[0].weight
    torch.testing.assert_close(w0[:n1], a.layers[0].weight)
    torch.testing.assert_close(w0[n1:], b.layers[0].weight)
    torch.testing.assert_close(g.layers[0].bias, torch.cat([a.layers[0].bias, b.layers[0].bias]))
    # hidden [[A, A'], [B', B]], A' = c'·T_A with c' = c_A turned by 90°
    w1, la, lb = g.layers[1].weight, a.layers[1], b.layers[1]
    torch.testing.assert_close(w1[:n2, :n1], la.weight)
    torch.testing.assert_close(w1[n2:, n1:], lb.weight)
    ca, cb = la.coefficients[0], lb.coefficients[0]
    rot_a, rot_b = torch.stack([-ca[1], ca[0]]), torch.stack([-cb[1], cb[0]])
    torch.testing.assert_close(
        w1[:n2, n1:], rot_a[0] * la.templates[0][0] + rot_a[1] * la.templates[0][1]
    )
    torch.testing.assert_close(
        w1[n2:, :n1], rot_b[0] * lb.templates[0][0] + rot_b[1] * lb.templates[0][1]
    )
    # the templates are shared: A and A' read the same Parameter
    assert g.layers[1].grid[0][0].set == g.layers[1].grid[0][1].set == 0
    # last [[A, B]], bias b_A + b_B
    w2 = g.layers[2].weight
    torch.testing.assert_close(w2[:, :n2], a.layers[2].weight)
    torch.testing.assert_close(w2[:, n2:], b.layers[2].weight)
    torch.testing.assert_close(g.layers[2].bias, a.layers[2].bias + b.layers[2].bias)


def test_with_new_blocks_zeroed_the_grown_net_is_the_sum_of_the_two():
    # Known answer: without A', B' the hidden units of A and B never mix, so the logits add.
    a, b = _pair(act="tanh")
    g = mixture_grow(a, b)
    with torch.no_grad():
        for layer in g.layers[1:-1]:
            layer.coefficients[2].zero_()
            layer.coefficients[3].zero_()
    x = torch.randn(64, 40)
    torch.testing.assert_close(g(x), a(x) + b(x), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(mixture_grow(a, b)(x), a(x) + b(x), atol=1e-3)


def test_orthogonal_coefficients():
    c = torch.tensor([0.6, 0.8])
    torch.testing.assert_close(orthogonal_coefficients(c), torch.tensor([-0.8, 0.6]))
    c3 = torch.tensor([[1.0, 2.0, -2.0]])
    v = orthogonal_coefficients(c3)
    assert float(v @ c3[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(v.norm()) == pytest.approx(3.0, abs=1e-6)
    vh = torch.linalg.svd(c3.double(), full_matrices=True).Vh[-1].float()
    assert torch.allclose(v / 3, vh, atol=1e-6) or torch.allclose(v / 3, -vh, atol=1e-6)
    two = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(orthogonal_coefficients(two), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ConfigError, match="more templates"):
        orthogonal_coefficients(torch.eye(2))
    # K = 3 growth: A' is orthogonal to A in coefficient space, same norm
    a, b = _pair(k=3)
    g = mixture_grow(a, b)
    ca, cn = g.layers[1].coefficients[0], g.layers[1].coefficients[2]
    assert float(ca.detach() @ cn.detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(cn.detach().norm()) == pytest.approx(float(ca.detach().norm()), abs=1e-6)


def test_random_blocks_are_seeded_uniform():
    a, b = _pair()
    r1, r2, r3 = (mixture_grow(a, b, "random", seed=s) for s in (0, 0, 1))
    f = r1.layers[1].free
    assert len(f) == 2 and f[0].shape == (12, 16)
    bound = 1 / math.sqrt(16)
    assert all(float(t.detach().abs().max()) <= bound for t in f)
    assert float(f[0].detach().abs().max()) > 0.8 * bound
    assert torch.equal(r1.layers[1].weight, r2.layers[1].weight)
    assert not torch.equal(r1.layers[1].weight, r3.layers[1].weight)
    torch.testing.assert_close(r1.layers[1].weight[:12, 16:], f[0])
    torch.testing.assert_close(r1.layers[1].weight[12:, :16], f[1])
    assert len(r1.layers[1].coefficients) == 2  # no new coefficients


def test_everything_keeps_training_and_the_sources_are_copies():
    a, b = _pair()
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    g = mixture_grow(a, b)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(g(torch.randn(32, 40)), torch.randint(0, 10, (32,)))
    loss.backward()
    for n, p in g.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, n
    opt.step()
    for n, p in a.named_parameters():
        assert torch.equal(p, before[n]), n


def test_bad_inputs_are_one_line_config_errors():
    a, b = _pair()
    cases = [
        ((a, build(TemplateMLP, [40, 8, 12, 10], seed=0)), "same shape"),
        ((a, build(TemplateMLP, [40, 16, 12, 10], num_templates=3, seed=0)), "template count"),
        ((a, build(TemplateMLP, [40, 16, 12, 10], activation="tanh", seed=0)), "activation"),
        ((mixture_grow(a, b), mixture_grow(a, b)), "ungrown"),
        ((a, build(torch.nn.Linear, 40, 10, seed=0)), "TemplateMLP"),
    ]
    for args, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            mixture_grow(*args)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="new_blocks"):
        mixture_grow(a, b, new_blocks="copy")
    one = build(TemplateMLP, [40, 10], seed=0)
    with pytest.raises(ConfigError, match="hidden layer"):
        mixture_grow(one, build(TemplateMLP, [40, 10], seed=1))
