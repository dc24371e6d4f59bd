"""N2N (Ashok et al. 2018): the reward, student construction from a teacher, the recurrent
policies, REINFORCE with a moving-average baseline, the policy optimizer; and the
teacher-logit distillation task the students train on."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from weightlab.core import take_snapshot
from weightlab.data import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.seeding import generator
from weightlab.sparsity.distill import distillation_task, label_accuracy, teacher_logits
from weightlab.sparsity.n2n import (
    MovingBaseline,
    PolicyOptimizer,
    RemovalPolicy,
    ShrinkPolicy,
    compression,
    inherit_state,
    layer_features,
    mlp_params,
    n2n_reward,
    random_removal,
    random_shrink,
    reinforce_loss,
    student_widths,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER = [4, 6, 6, 6, 3]


def test_reward_hand_computed():
    # 25 of 100 parameters kept: C = 0.75, C(2 - C) = 0.9375; accuracy ratio 0.5 / 0.6
    assert n2n_reward(0.5, 0.6, 25, 100) == pytest.approx(0.9375 * 0.5 / 0.6)
    assert n2n_reward(0.6, 0.6, 100, 100) == 0.0  # no compression, no reward
    assert n2n_reward(0.6, 0.6, 0, 100) == pytest.approx(1.0)
    assert compression(30, 120) == pytest.approx(0.75)
    # concave in C: the first half of the compression earns 3/4 of the maximum
    assert n2n_reward(1.0, 1.0, 50, 100) == pytest.approx(0.75)
    with pytest.raises(ConfigError):
        n2n_reward(0.5, 0.0, 1, 2)


def test_mlp_params_and_student_widths():
    assert mlp_params([40, 256, 10]) == 40 * 256 + 256 + 256 * 10 + 10
    w = [40, 256, 256, 256, 10]
    assert student_widths(w, [True] * 4) == w
    assert student_widths(w, [True, False, True, True]) == [40, 256, 256, 10]
    assert student_widths(w, [False, False, False, True]) == [40, 10]
    assert student_widths(w, [True, False, False, False]) == [40, 10]  # last kept writes out
    assert student_widths(w, [False] * 4) is None
    assert student_widths(w, [True, True, False, True], [0.25, 0.5, 1.0]) == [40, 64, 128, 10]
    assert student_widths(w, [True, True, False, True], [0.25, 0.5, 0.1]) == [40, 64, 128, 10]
    with pytest.raises(ConfigError):
        student_widths(w, [True] * 3)
    with pytest.raises(ConfigError):
        student_widths(w, [True] * 4, [1.0])


def _teacher(seed=0):
    return build(MLP, TEACHER, seed=seed)


def test_removed_layer_student_equals_the_teacher_without_it():
    t = _teacher()
    keep = [True, False, True, True]
    sw = student_widths(TEACHER, keep)
    fresh = take_snapshot(build(MLP, sw, seed=7))
    state, inherited = inherit_state(take_snapshot(t), TEACHER, keep, sw, fresh)
    assert inherited == [True, True, True]
    s = MLP(sw)
    s.load_state_dict(state)
    x = torch.randn(9, 4, generator=generator(0))
    h = F.relu(t.layers[0](x))  # layer 1 skipped
    h = F.relu(t.layers[2](h))
    torch.testing.assert_close(s(x), t.layers[3](h))


def test_shrunk_student_equals_the_teacher_with_weak_units_zeroed():
    t = _teacher(1)
    keep = [True, True, True, True]
    sw = student_widths(TEACHER, keep, [0.5, 1.0, 1.0, 1.0])
    assert sw == [4, 3, 6, 6, 3]
    state, inherited = inherit_state(take_snapshot(t), TEACHER, keep, sw, take_snapshot(MLP(sw)))
    assert all(inherited)
    norms = t.layers[0].weight.abs().sum(1)
    kept = sorted(torch.argsort(norms, descending=True)[:3].tolist())
    torch.testing.assert_close(state["layers.0.weight"], t.layers[0].weight[kept])
    s = MLP(sw)
    s.load_state_dict(state)
    x = torch.randn(9, 4, generator=generator(1))
    mask = torch.zeros(6)
    mask[kept] = 1
    h = F.relu(t.layers[0](x)) * mask
    for layer in t.layers[1:3]:
        h = F.relu(layer(h))
    torch.testing.assert_close(s(x), t.layers[3](h))


def test_layers_whose_shape_changed_are_fresh():
    t = _teacher()
    keep = [False, True, True, False]  # new first layer reads 4 inputs, new last writes 3
    sw = student_widths(TEACHER, keep)
    assert sw == [4, 6, 3]
    fresh = take_snapshot(build(MLP, sw, seed=3))
    state, inherited = inherit_state(take_snapshot(t), TEACHER, keep, sw, fresh)
    assert inherited == [False, False]
    for k in state:
        assert torch.equal(state[k], fresh[k])
    keep = [True, True, False, False]  # kept first layer inherited, new output layer fresh
    sw = student_widths(TEACHER, keep)
    fresh = take_snapshot(build(MLP, sw, seed=3))
    state, inherited = inherit_state(take_snapshot(t), TEACHER, keep, sw, fresh)
    assert inherited == [True, False]
    assert torch.equal(state["layers.0.weight"], t.layers[0].weight.detach())
    assert torch.equal(state["layers.1.weight"], fresh["layers.1.weight"])


def test_layer_features():
    f = layer_features([40, 256, 256, 10])
    assert f.shape == (3, 4)
    assert f[:, 3].tolist() == [0.0, 0.5, 1.0]
    assert f[1, 2] == 1.0  # the 256x256 layer has the most parameters
    assert f[0, 0] == pytest.approx(40 / 256)


def test_removal_policy_sample_and_log_prob():
    p = build(RemovalPolicy, seed=0)
    feats = layer_features([40, 256, 256, 256, 10])
    keep, lp = p.sample(feats, generator(1))
    keep2, lp2 = p.sample(feats, generator(1))
    assert keep == keep2 and torch.equal(lp, lp2) and len(keep) == 4
    logp = torch.log_softmax(p(feats), -1)
    expect = sum(logp[i, int(k)] for i, k in enumerate(keep))
    torch.testing.assert_close(lp, expect)
    lp.backward()
    assert all(q.grad is not None for q in p.parameters())


def test_shrink_policy_fixed_layers_are_not_sampled():
    p = build(ShrinkPolicy, (0.25, 0.5, 1.0), seed=0)
    feats = layer_features([40, 256, 256, 10])
    fr, lp = p.sample(feats, generator(2), fixed=[False, False, True])
    assert len(fr) == 3 and fr[-1] == 1.0 and set(fr[:2]) <= {0.25, 0.5, 1.0}
    _, lp_all_fixed = p.sample(feats, generator(2), fixed=[True, True, True])
    assert float(lp_all_fixed) == 0.0 and float(lp.detach()) < 0
    assert random_shrink(3, generator(0), (0.5,), [False, False, True]) == [0.5, 0.5, 1.0]
    with pytest.raises(ConfigError):
        ShrinkPolicy((0.0, 1.0))


def test_random_removal_is_seeded_and_fair():
    a = random_removal(1000, generator(0))
    assert a == random_removal(1000, generator(0))
    assert 450 < sum(a) < 550


def test_baseline_and_reinforce_loss():
    b = MovingBaseline(0.5)
    assert b.advantages([1.0, 3.0]) == [-1.0, 1.0]  # first episode: its own mean
    b.update([1.0, 3.0])
    assert b.value == 2.0
    b.update([4.0, 4.0])
    assert b.value == pytest.approx(0.5 * 2 + 0.5 * 4)
    assert b.advantages([3.0]) == [0.0]
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = reinforce_loss([lp[0], lp[1]], [2.0, -1.0])
    assert float(loss.detach()) == pytest.approx(-(2.0 * -1.0 + -1.0 * -2.0) / 2)
    loss.backward()
    assert lp.grad.tolist() == [-1.0, 0.5]
    with pytest.raises(ConfigError):
        reinforce_loss([], [])
    with pytest.raises(ConfigError):
        MovingBaseline(1.0)


def test_policy_optimizer_matches_torch_adam():
    a, b = build(RemovalPolicy, seed=3), build(RemovalPolicy, seed=3)
    feats = layer_features([8, 16, 16, 4])
    ours = PolicyOptimizer(a.parameters(), lr=0.01)
    ref = torch.optim.Adam(b.parameters(), lr=0.01)
    for _ in range(3):
        ours.step(a(feats).square().mean())
        ref.zero_grad()
        b(feats).square().mean().backward()
        ref.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_reinforce_learns_a_rewarded_pattern():
    """A removal policy rewarded for matching a target keep pattern raises its
    probability (REINFORCE with the moving baseline, 4 rollouts per episode)."""
    target = [True, False, True, False]
    feats = layer_features([8, 8, 8, 8, 8])
    p = build(RemovalPolicy, 4, 8, 1, seed=0)
    opt, base, g = PolicyOptimizer(p.parameters(), lr=0.05), MovingBaseline(0.8), generator(0)

    def prob() -> float:
        with torch.no_grad():
            logp = torch.log_softmax(p(feats), -1)
            return float(sum(logp[i, int(k)] for i, k in enumerate(target)).exp())

    start = prob()
    for _ in range(80):
        samples = [p.sample(feats, g) for _ in range(4)]
        rewards = [sum(a == b for a, b in zip(k, target, strict=True)) / 4 for k, _ in samples]
        opt.step(reinforce_loss([lp for _, lp in samples], base.advantages(rewards)))
        base.update(rewards)
    assert prob() > max(0.3, 3 * start)


# -- teacher-logit distillation tasks ---------------------------------------------------


def _task() -> TaskData:
    g = generator(4)
    x = torch.randn(200, 4, generator=g)
    y = x[:, :3].argmax(1)
    return TaskData(
        "toy", Split(x[:120], y[:120]), Split(x[120:160], y[120:160]), Split(x[160:], y[160:]), 3
    )


def test_distillation_task_holds_teacher_logits():
    data, t = _task(), _teacher()
    d = distillation_task(data, t, n_train=50, seed=1)
    assert d.kind == "regression" and d.output_shape == (3,) and len(d.train) == 50
    assert d.name == "toy-distill"
    with torch.no_grad():
        torch.testing.assert_close(d.val.y, t(data.val.x))
        torch.testing.assert_close(d.train.y, t(d.train.x))
    again = distillation_task(data, t, n_train=50, seed=1)
    assert torch.equal(again.train.x, d.train.x)
    other = distillation_task(data, t, n_train=50, seed=2)
    assert not torch.equal(other.train.x, d.train.x)
    assert len(distillation_task(data, t).train) == 120
    with pytest.raises(ConfigError, match="cannot distil on 500"):
        distillation_task(data, t, n_train=500)
    with pytest.raises(ConfigError, match="classification"):
        distillation_task(d, t)
    torch.testing.assert_close(teacher_logits(t, data.test.x, chunk=7), d.test.y)
    assert label_accuracy(t, data.test) == pytest.approx(
        float((d.test.y.argmax(1) == data.test.y).float().mean())
    )
    assert t.training  # mode restored
