"""TAS (Dong & Yang 2019): channel-wise interpolation, Gumbel selection, FLOP counting and
the FLOP loss, the searchable MLP's forward, the search through the one loop; and the
soft-target distillation loss it trains the pruned nets with."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from weightlab.data import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.distill import kd_loss
from weightlab.sparsity.tas import (
    TASMLP,
    TASCallback,
    TASLoss,
    candidate_widths,
    channel_interp,
    cost_loss,
    gumbel_select,
    linear_tau,
    mlp_flops,
    uniform_width,
)
from weightlab.train import OptimConfig, ParamGroup, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_channel_interp_known_answers():
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # up: output unit o averages input units floor(o*4/8) .. ceil((o+1)*4/8) - 1
    assert channel_interp(h, 8).tolist() == [[1, 1, 2, 2, 3, 3, 4, 4]]
    # down: bins [0, 2), [1, 3), [2, 4)
    assert channel_interp(h, 3).tolist() == [[1.5, 2.5, 3.5]]
    assert channel_interp(h, 4) is h
    # leading dims are kept
    x = torch.arange(24.0).view(2, 3, 4)
    assert channel_interp(x, 8).shape == (2, 3, 8)


def test_candidate_widths_and_flops():
    assert candidate_widths(256, (0.25, 0.5, 0.75, 1.0)) == (64, 128, 192, 256)
    assert candidate_widths(10, (0.01, 0.5, 0.5)) == (1, 5)
    with pytest.raises(ConfigError, match="fractions"):
        candidate_widths(10, (0.0, 1.0))
    assert mlp_flops([40, 256, 256, 10]) == 2 * (40 * 256 + 256 * 256 + 256 * 10)
    assert mlp_flops([40, 64.5, 10]) == 2 * (40 * 64.5 + 64.5 * 10)


def test_uniform_width_matches_flops():
    dense = [40, 256, 256, 10]
    target = mlp_flops([40, 192, 64, 10])
    w, gap = uniform_width(dense, target)
    assert abs(gap) < 0.02
    # the neighbours are no closer
    for v in (w - 1, w + 1):
        assert abs(mlp_flops([40, v, v, 10]) - target) >= abs(mlp_flops([40, w, w, 10]) - target)
    assert gap == pytest.approx((mlp_flops([40, w, w, 10]) - target) / target)


def test_linear_tau():
    assert linear_tau(1, 101) == 10.0
    assert linear_tau(101, 101) == pytest.approx(0.1)
    assert linear_tau(51, 101) == pytest.approx(5.05)
    assert linear_tau(1, 1) == 0.1


def test_gumbel_select_is_seeded_distinct_and_differentiable():
    alpha = torch.tensor([0.1, -0.3, 0.5, 0.0], requires_grad=True)
    i1, w1 = gumbel_select(alpha, 1.0, generator(3))
    i2, w2 = gumbel_select(alpha, 1.0, generator(3))
    assert torch.equal(i1, i2) and torch.equal(w1, w2)
    assert len(set(i1.tolist())) == 2
    assert float(w1.detach().sum()) == pytest.approx(1.0)
    (w1[0] * 3).backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    # a dominant candidate is (almost) always among the two drawn
    big = torch.tensor([0.0, 0.0, 12.0, 0.0])
    hits = sum(2 in gumbel_select(big, 1.0, generator(s))[0].tolist() for s in range(50))
    assert hits == 50


def test_expected_flops_hand_computed():
    m = TASMLP([4, 8, 8, 2], (0.5, 1.0))
    with torch.no_grad():
        m.arch.logits.copy_(torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]))
    # layer 1: P(4) = 1/4, P(8) = 3/4 -> E = 7; layer 2: E = 6
    expect = 2 * (4 * 7 + 7 * 6 + 6 * 2)
    assert float(m.expected_flops().detach()) == pytest.approx(expect)
    assert m.argmax_widths() == [4, 8, 4, 2]  # ties go to the first candidate


def test_cost_loss_cases_and_direction():
    m = TASMLP([4, 8, 8, 2], (0.25, 0.5, 1.0))
    e = m.expected_flops().detach()
    assert float(cost_loss(e, 200.0, 100.0)) == pytest.approx(math.log(float(e)))
    assert float(cost_loss(e, 50.0, 100.0)) == pytest.approx(-math.log(float(e)))
    assert float(cost_loss(e, 103.0, 100.0, 0.05)) == 0.0
    # too expensive: the gradient step lowers the probability of the widest candidates
    cost_loss(m.expected_flops(), 200.0, 100.0).backward()
    g = m.arch.logits.grad
    assert (g[:, -1] > 0).all() and (g[:, 0] < 0).all()


def _plain_from(m: TASMLP, widths: list[int]) -> MLP:
    plain = MLP(widths)
    with torch.no_grad():
        for i, layer in enumerate(plain.layers):
            o, n = widths[i + 1], widths[i]
            layer.weight.copy_(m.layers[i].weight[:o, :n])
            layer.bias.copy_(m.layers[i].bias[:o])
    return plain


def test_eval_forward_is_the_argmax_subnetwork():
    m = build(TASMLP, [6, 12, 8, 3], (0.25, 0.5, 1.0), seed=1)
    with torch.no_grad():
        m.arch.logits.copy_(torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
    assert m.argmax_widths() == [6, 6, 2, 3]
    x = torch.randn(5, 6, generator=generator(0))
    m.eval()
    torch.testing.assert_close(m(x), _plain_from(m, [6, 6, 2, 3])(x), rtol=0, atol=1e-6)


def test_train_forward_single_candidate_is_the_full_mlp():
    m = build(TASMLP, [6, 12, 8, 3], (1.0,), seed=2)
    x = torch.randn(5, 6, generator=generator(0))
    m.train()
    torch.testing.assert_close(m(x), _plain_from(m, [6, 12, 8, 3])(x), rtol=0, atol=1e-6)


def test_train_forward_is_the_cwi_mixture_of_the_sampled_widths():
    m = build(TASMLP, [5, 4, 3], (0.5, 1.0), seed=3, gumbel_seed=9)
    m.set_step(7, 2.0)
    x = torch.randn(6, 5, generator=generator(1))
    m.train()
    out = m(x)
    # by hand: the same Gumbel draw, both candidates (2 of 2), CWI of the first 2 units to 4
    idx, w = gumbel_select(m.arch.logits[0], 2.0, generator(derive_seed("tas-gumbel", 9, 7)))
    z = F.linear(x, m.layers[0].weight, m.layers[0].bias)
    frag = {2: channel_interp(z[:, :2], 4), 4: z}
    h = sum(wj * frag[m.choices[0][j]] for wj, j in zip(w, idx.tolist(), strict=True))
    expect = F.linear(F.relu(h), m.layers[1].weight, m.layers[1].bias)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-6)
    # z[:, :2] up-sampled to 4 units repeats each unit twice
    torch.testing.assert_close(frag[2], z[:, [0, 0, 1, 1]])
    # another step draws other noise
    m.set_step(8, 2.0)
    assert not torch.equal(m(x), out)


def _toy_task(n=240, d=6, classes=3) -> TaskData:
    g = generator(5)
    x = torch.randn(n + 120, d, generator=g)
    y = (x[:, :classes] * 2).argmax(1)
    return TaskData(
        "toy",
        Split(x[:n], y[:n]),
        Split(x[n : n + 60], y[n : n + 60]),
        Split(x[n + 60 :], y[n + 60 :]),
        classes,
    )


def _search(seed_bias: int = 0):
    data = _toy_task()
    m = build(TASMLP, [6, 16, 16, 3], (0.25, 0.5, 1.0), seed=4, gumbel_seed=5 + seed_bias)
    target = 0.25 * mlp_flops(m.widths)
    groups = (ParamGroup(("arch.*",), lr_mult=50.0),)
    cfg = TrainConfig(
        epochs=2,
        batch_size=40,
        optim=OptimConfig("adam", lr=1e-3, groups=groups),
        loss=TASLoss(m, target),
    )
    before = m.arch.logits.detach().clone()
    res = train(m, data, cfg, data_seed=0, callbacks=[TASCallback()])
    return m, before, res


def test_search_through_the_loop_moves_the_architecture_and_is_deterministic():
    m1, before, res = _search()
    m2, _, _ = _search()
    assert not res.diverged
    assert not torch.equal(m1.arch.logits, before)
    torch.testing.assert_close(m1.arch.logits, m2.arch.logits, rtol=0, atol=0)
    assert m1.step == 2 * 6 + 1 and m1.tau == pytest.approx(0.1)  # set by the callback
    # the FLOP loss pulled the widths toward 25% of the dense FLOPs
    assert m1.expected_flops() < TASMLP([6, 16, 16, 3], (0.25, 0.5, 1.0)).expected_flops()
    m3, _, _ = _search(seed_bias=1)  # other Gumbel draws, other path
    assert not torch.equal(m1.arch.logits, m3.arch.logits)


def test_tas_loss_adds_the_cost_once_per_example():
    m = TASMLP([4, 8, 2], (0.5, 1.0))
    loss = TASLoss(m, target_flops=1.0, weight=2.0)  # far too expensive: log E_cost
    pred, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    per = loss(pred, y)
    ce = F.cross_entropy(pred, y, reduction="none")
    torch.testing.assert_close(per, ce + 2.0 * torch.log(m.expected_flops()))
    with pytest.raises(ConfigError):
        TASLoss(m, target_flops=0.0)


# -- soft-target distillation (Hinton et al. 2015) --------------------------------------


def test_kd_loss_is_t_squared_kl():
    g = generator(0)
    s, t = torch.randn(3, 7, 5, generator=g), torch.randn(7, 5, generator=g)
    got = kd_loss(4.0)(s, t)
    assert got.shape == (3, 7)
    ref = (
        F.kl_div(
            F.log_softmax(s / 4, -1),
            F.log_softmax(t / 4, -1).expand_as(s),
            log_target=True,
            reduction="none",
        ).sum(-1)
        * 16
    )
    torch.testing.assert_close(got, ref)
    assert torch.allclose(kd_loss(2.0)(t, t), torch.zeros(7), atol=1e-6)
    with pytest.raises(ConfigError, match="teacher logits"):
        kd_loss()(s[0], torch.tensor([0, 1, 2, 3, 4, 0, 1]))
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(0.0)


def test_kd_loss_trains_a_student_toward_the_teacher_in_the_loop():
    from weightlab.sparsity.distill import distillation_task, label_accuracy

    data = _toy_task()
    teacher = build(MLP, [6, 32, 3], seed=0)
    train(teacher, data, TrainConfig(epochs=10, batch_size=40), data_seed=0)
    dtask = distillation_task(data, teacher)
    student = build(MLP, [6, 8, 3], seed=1)

    def agreement() -> float:
        with torch.no_grad():
            return float((student(data.test.x).argmax(1) == dtask.test.y.argmax(1)).float().mean())

    before = agreement()
    cfg = TrainConfig(
        epochs=10, batch_size=40, optim=OptimConfig("adam", lr=1e-2), loss=kd_loss(4.0)
    )
    res = train(student, dtask, cfg, data_seed=1)
    assert res.history[-1].val_loss < res.history[0].val_loss
    assert res.history[-1].val_r2 is not None  # fidelity to the teacher's logits
    assert agreement() > max(before, 0.8)
    assert label_accuracy(student, data.test) > 0.5
