"""Mean-field binary weights and the metaplasticity baseline (weightlab.quant.binary)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from weightlab.data import load_dataset
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.quant.binary import (
    VAR_FLOOR,
    FieldPrior,
    MeanFieldBinaryLinear,
    MeanFieldBinaryMLP,
    Metaplastic,
    MetaplasticCallback,
    SignLinear,
    bernoulli_kl,
    binarize,
    binary_accuracy,
    field_kl,
    gaussian_field,
    gaussian_log_probs,
    meta_factor,
    perceptron_nll,
    sign_expectation,
    sign_ste,
)
from weightlab.seeding import generator
from weightlab.train import OptimConfig, TrainConfig, batch_indices, train
from weightlab.train.losses import cross_entropy_per_example

pytestmark = pytest.mark.usefixtures("one_thread")


# -- Gaussian field ------------------------------------------------------------------
def test_gaussian_field_matches_a_hand_computation():
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    m = torch.tensor([[0.5, -0.5, 0.0, 1.0]])
    mu, sigma = gaussian_field(x, m)
    want_mu = (0.5 + 1.0 + 0.0 + 3.0) / 2.0
    want_var = (1 * 0.75 + 4 * 0.75 + 0.25 * 1 + 9 * 0) / 4
    assert mu.item() == pytest.approx(want_mu)
    assert sigma.item() == pytest.approx(math.sqrt(want_var))


def test_gaussian_field_is_the_mean_and_variance_of_sampled_binary_weights():
    g = generator(0)
    n = 40
    x = torch.randn(3, n, generator=g, dtype=torch.float64)
    m = torch.tanh(torch.randn(2, n, generator=g, dtype=torch.float64))
    mu, sigma = gaussian_field(x, m)
    u = torch.rand(100_000, 2, n, generator=g, dtype=torch.float64)
    w = torch.where(u < (1 + m) / 2, 1.0, -1.0).to(torch.float64)
    h = torch.einsum("bn,dkn->dbk", x, w) / math.sqrt(n)  # (draws, 3, 2)
    assert torch.allclose(h.mean(0), mu, atol=0.01)
    assert torch.allclose(h.std(0), sigma, rtol=0.01)


def test_second_moments_of_sign_inputs_and_the_floor():
    a = torch.tensor([[0.2, -0.6]])
    m = torch.tensor([[0.5, 1.0]])
    _, sigma = gaussian_field(a, m, torch.ones_like(a))
    # Var[w s] = E[s^2] - m^2 a^2 for independent w, s
    want = ((1 - 0.25 * 0.04) + (1 - 1.0 * 0.36)) / 2
    assert sigma.item() == pytest.approx(math.sqrt(want))
    _, frozen = gaussian_field(torch.ones(1, 3), torch.ones(1, 3))
    assert frozen.item() == pytest.approx(math.sqrt(VAR_FLOOR))


def test_perceptron_nll_is_minus_log_phi_and_stable():
    z = torch.tensor([-40.0, -5.0, -0.3, 0.0, 2.0, 30.0], dtype=torch.float64, requires_grad=True)
    loss = perceptron_nll(z, torch.ones_like(z), torch.ones_like(z))
    assert torch.allclose(loss, torch.tensor(-norm.logcdf(z.detach().numpy())), rtol=1e-10)
    loss.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad[0] < -39  # d/dz -log Phi(z) ~ z for z << 0
    neg = perceptron_nll(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(-1.0))
    assert neg.item() == pytest.approx(-norm.logcdf(-0.5))


def test_log_probs_are_normalized_and_cross_entropy_is_the_perceptron_loss():
    g = generator(1)
    mu, sigma = torch.randn(50, generator=g), torch.rand(50, generator=g) + 0.1
    lp = gaussian_log_probs(mu, sigma)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(50), atol=1e-6)
    y = (torch.rand(50, generator=g) < 0.5).long()
    ce = cross_entropy_per_example(lp, y)
    assert torch.allclose(ce, perceptron_nll(mu, sigma, 2.0 * y - 1), atol=1e-5)
    assert torch.equal(lp.argmax(-1), (mu > 0).long())
    assert torch.allclose(
        sign_expectation(mu, sigma), 2 * torch.special.ndtr(mu / sigma) - 1, atol=1e-6
    )


# -- KL prior -------------------------------------------------------------------------
def test_bernoulli_kl_by_hand_and_against_torch_distributions():
    # m = 0.5 vs 0: p = 0.75 vs 0.5: 0.75 ln 1.5 + 0.25 ln 0.5
    hand = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert bernoulli_kl(torch.tensor(0.5), torch.tensor(0.0)).item() == pytest.approx(hand)
    assert field_kl(torch.tensor(math.atanh(0.5)), torch.tensor(0.0)).item() == pytest.approx(hand)
    g = generator(2)
    th, th0 = (
        3 * torch.randn(100, generator=g, dtype=torch.float64),
        3 * torch.randn(100, generator=g, dtype=torch.float64),
    )
    m, m0 = torch.tanh(th), torch.tanh(th0)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(probs=(1 + m) / 2),
        torch.distributions.Bernoulli(probs=(1 + m0) / 2),
    )
    assert torch.allclose(bernoulli_kl(m, m0), ref, rtol=1e-8, atol=1e-12)
    assert torch.allclose(field_kl(th, th0), ref, rtol=1e-8, atol=1e-12)
    assert field_kl(th, th).abs().max() < 1e-12
    big = field_kl(torch.tensor(40.0), torch.tensor(-40.0))
    assert math.isfinite(big.item()) and big.item() == pytest.approx(80.0, rel=1e-6)  # m (θ - θ')


def test_field_prior_sums_kl_per_unit_and_adds_beta_kl_over_p():
    layer = MeanFieldBinaryLinear(4, 2, init_std=1.0, generator=generator(3))
    prior = FieldPrior(layer)
    assert prior.kl(layer).item() == 0.0
    with torch.no_grad():
        layer.theta.add_(torch.tensor([[0.5, 0, 0, 0], [0, 0, 0, -1.0]]))
    per = prior.kl(layer, per_unit=True)
    want = field_kl(layer.theta, prior.theta_prev[""]).sum(-1)
    assert torch.allclose(per, want) and per.shape == (2,)
    beta = torch.tensor([2.0, 0.5])
    fn = prior.loss(layer, lambda pred, y: torch.zeros(len(y)), beta, n_train=10)
    out = fn(None, torch.zeros(3))
    assert torch.allclose(out, torch.full((3,), float((beta * want).sum().detach() / 10)))


# -- binarized network -------------------------------------------------------------
def test_binarize_and_binary_accuracy():
    layer = MeanFieldBinaryLinear(3, 2)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([[0.3, -2.0, 0.0], [-1.0, -1.0, -1.0]]))
    w = binarize(layer)
    assert torch.equal(w, torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]]))
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    y = torch.tensor([1, 1, 0])  # +1, +1, -1
    # unit 0: h = (1, -1, -1) -> 2/3 right; unit 1: h = (-1, -1, 1) -> 0/3 right
    assert torch.allclose(binary_accuracy(layer, x, y), torch.tensor([2 / 3, 0.0]))
    with pytest.raises(ConfigError, match="binarize needs"):
        binarize(torch.nn.Linear(2, 2))


def test_sign_ste_forward_is_exact_and_gradient_is_identity():
    w = torch.tensor([0.3, -1e-9, 0.0, -4.0], requires_grad=True)
    s = sign_ste(w)
    assert torch.equal(s, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    (s * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]))


# -- training in the loop ----------------------------------------------------------
def _teacher_task(n: int, p: int, seed: int) -> tuple[TaskData, torch.Tensor]:
    g = generator(seed)
    w = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    x = torch.randn(2 * p, n, generator=g)
    y = (x @ w > 0).long()
    empty = Split(x[:0], y[:0])
    return TaskData("t", Split(x[:p], y[:p]), empty, Split(x[p:], y[p:]), 2), w


class _Perceptron(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.layer = MeanFieldBinaryLinear(n, 1)

    def forward(self, x):
        mu, sigma = self.layer(x)
        return gaussian_log_probs(mu[:, 0], sigma[:, 0])


def test_mean_field_perceptron_learns_a_binary_teacher_in_the_loop():
    data, w = _teacher_task(100, 400, 4)
    model = _Perceptron(100)
    res = train(model, data, TrainConfig(20, 50, 160, OptimConfig("adam", lr=0.05)), 0)
    assert res.final.test_acc > 0.85  # mean-field prediction sign(mu)
    acc = binary_accuracy(model.layer, data.test.x, data.test.y)
    assert acc.item() > 0.85
    overlap = (binarize(model.layer)[0] * w).mean()
    assert overlap > 0.6


def test_prior_strength_keeps_the_previous_posterior():
    data, _ = _teacher_task(60, 200, 5)
    other, _ = _teacher_task(60, 200, 6)
    first = _Perceptron(60)
    train(first, data, TrainConfig(10, 50, 0, OptimConfig("adam", lr=0.05)), 0)
    moved = {}
    for beta in (0.0, 100.0):
        model = _Perceptron(60)
        model.load_state_dict(first.state_dict())
        prior = FieldPrior(model)
        loss = prior.loss(model, cross_entropy_per_example, beta, len(other.train))
        train(model, other, TrainConfig(10, 50, 0, OptimConfig("adam", lr=0.05), loss=loss), 1)
        moved[beta] = prior.kl(model).item()
    assert moved[100.0] < 0.2 * moved[0.0]


def test_mean_field_mlp_trains_above_chance_on_xor():
    """XOR clusters: no linear classifier beats chance; the mean-field MLP (sign hidden
    units propagated by their expectation) does, trained by the ONE loop."""
    data = load_dataset("xor", "cpu", n_train=400, n_val=1, n_test=1000, d=2, mu=4.0, flip=0.0)
    scale = data.train.x.std()
    data = TaskData(
        "xor",
        Split(data.train.x / scale, data.train.y),
        data.val,
        Split(data.test.x / scale, data.test.y),
        2,
    )
    cfg = TrainConfig(40, 40, 0, OptimConfig("adam", lr=0.05))
    model = MeanFieldBinaryMLP([2, 64, 1], init_std=0.5, generator=generator(7), bias=True)
    res = train(model, data, cfg, 0)
    assert res.final.test_acc > 0.85  # chance: 0.5
    single = _Perceptron(2)
    assert train(single, data, cfg, 0).final.test_acc < 0.65
    with pytest.raises(ConfigError, match="end in 1 output"):
        MeanFieldBinaryMLP([8, 4, 2], generator=generator(0))


# -- metaplasticity ------------------------------------------------------------------
def _adam_meta_reference(w, grad_fn, lr, m, steps, betas=(0.9, 0.999), eps=1e-8):
    """Laborieux et al.'s Adam_meta, written from their algorithm (no torch.optim)."""
    w = w.clone()
    ea, eas = torch.zeros_like(w), torch.zeros_like(w)
    for t in range(1, steps + 1):
        g = grad_fn(w)
        ea = betas[0] * ea + (1 - betas[0]) * g
        eas = betas[1] * eas + (1 - betas[1]) * g * g
        step = lr / (1 - betas[0] ** t)
        denom = eas.sqrt() / math.sqrt(1 - betas[1] ** t) + eps
        cond = torch.sign(w) * ea > 0
        decay = 1 - torch.tanh(m * w.abs()) ** 2
        w = w - step * torch.where(cond, decay * ea, ea) / denom
    return w


def _quadratic(seed: int):
    g = generator(seed)
    x = torch.randn(30, 8, generator=g, dtype=torch.float64)
    t = torch.randn(30, 3, generator=g, dtype=torch.float64)
    w0 = 0.3 * torch.randn(3, 8, generator=g, dtype=torch.float64)

    def loss(w):
        return ((x @ w.T - t) ** 2).mean()

    def grad(w):
        w = w.clone().requires_grad_(True)
        loss(w).backward()
        return w.grad

    return w0, loss, grad


@pytest.mark.parametrize("m", [0.0, 1.5, 6.0])
def test_metaplastic_adam_equals_the_reference_adam_meta(m):
    w0, loss, grad = _quadratic(8)
    w = torch.nn.Parameter(w0.clone())
    opt = Metaplastic(torch.optim.Adam([w], lr=0.05), m)
    for _ in range(40):
        opt.zero_grad()
        loss(w).backward()
        opt.step()
    ref = _adam_meta_reference(w0, grad, 0.05, m, 40)
    assert torch.allclose(w.detach(), ref, rtol=1e-10, atol=1e-12)
    if m == 0.0:
        plain = torch.nn.Parameter(w0.clone())
        adam = torch.optim.Adam([plain], lr=0.05)
        for _ in range(40):
            adam.zero_grad()
            loss(plain).backward()
            adam.step()
        assert torch.equal(plain.detach(), w.detach())


def test_metaplastic_sgd_scales_only_updates_toward_zero():
    w = torch.nn.Parameter(torch.tensor([[1.0, 1.0, -2.0, 0.0]]))
    opt = Metaplastic(torch.optim.SGD([w], lr=0.1), 1.0)
    w.grad = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    opt.step()
    f1, f2 = meta_factor(torch.tensor(1.0), 1.0), meta_factor(torch.tensor(-2.0), 1.0)
    want = torch.tensor([[1.0 - 0.1 * f1, 1.1, -2.0 + 0.1 * f2, -0.1]])
    assert torch.allclose(w.detach(), want)


class _SignNet(torch.nn.Module):
    def __init__(self, n: int, out: int, seed: int) -> None:
        super().__init__()
        self.layer = SignLinear(n, out, init_std=0.01, generator=generator(seed))

    def forward(self, x):
        h = self.layer(x)
        return torch.stack((-h[:, 0], h[:, 0]), -1)


def test_the_loop_callback_equals_the_optimizer_wrapper_bitwise():
    data, _ = _teacher_task(50, 200, 9)
    cfg = TrainConfig(3, 20, 0, OptimConfig("adam", lr=0.01))
    m = torch.tensor([[2.0]])
    a = _SignNet(50, 1, 10)
    train(a, data, cfg, 3, callbacks=[MetaplasticCallback(a, m)])

    b = _SignNet(50, 1, 10)
    opt = Metaplastic(torch.optim.Adam(b.parameters(), lr=0.01), m)
    for idx in batch_indices(200, 20, 3, 3):
        loss = cross_entropy_per_example(b(data.train.x[idx]), data.train.y[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert torch.equal(a.layer.weight, b.layer.weight)
    plain = _SignNet(50, 1, 10)
    train(plain, data, cfg, 3)
    assert not torch.equal(plain.layer.weight, a.layer.weight)


def test_large_m_consolidates_hidden_weights():
    data, _ = _teacher_task(80, 300, 11)
    other, _ = _teacher_task(80, 300, 12)
    cfg = TrainConfig(10, 50, 0, OptimConfig("adam", lr=0.01))
    flips = {}
    for m in (0.0, 20.0):
        net = _SignNet(80, 1, 13)
        train(net, data, cfg, 0, callbacks=[MetaplasticCallback(net, m)])
        before = binarize(net.layer).clone()
        train(net, other, cfg, 1, callbacks=[MetaplasticCallback(net, m)])
        flips[m] = int((binarize(net.layer) != before).sum())
    assert flips[20.0] < flips[0.0]


def test_bad_inputs_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="m must be >= 0"):
        Metaplastic(torch.optim.SGD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1), -1.0)
    with pytest.raises(ConfigError, match="needs a generator"):
        MeanFieldBinaryLinear(3, 2, init_std=0.1)
    with pytest.raises(ConfigError, match="no parameter"):
        MetaplasticCallback(torch.nn.Linear(2, 2), 1.0, names=["nope"])
