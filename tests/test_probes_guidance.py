"""Guidance [#81]: the alignment penalty, its gradients, the frozen guide, and the loop."""

import copy

import pytest
import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.probes.cka import linear_cka
from weightlab.probes.guidance import Guided, guidance_penalty
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig


def _nets(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    target = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    guide = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 5))
    x = torch.randn(40, 6, generator=g)
    return target, guide, x


def test_penalty_is_the_sum_of_one_minus_linear_cka_and_differentiable():
    target, guide, x = _nets()
    pairs = [("1", "2"), ("2", "3")]
    target.eval()
    p = guidance_penalty(target, guide, x, pairs)
    # the probe restores both networks' modes and the guide's requires_grad flags
    assert not target.training and guide.training
    assert all(q.requires_grad for q in guide.parameters())
    guide.requires_grad_(False)
    h1 = torch.relu(target[0](x))
    h2 = target[2](h1)
    guide.eval()
    g2 = torch.tanh(guide[1](guide[0](x)))
    g3 = guide[3](g2)
    want = (1 - linear_cka(h1, g2)) + (1 - linear_cka(h2, g3))
    assert float(p.detach()) == pytest.approx(float(want.detach()), rel=1e-10)
    p.backward()
    assert target[0].weight.grad is not None and target[0].weight.grad.abs().sum() > 0
    assert all(q.grad is None for q in guide.parameters())
    # a copy of the target as its own guide: CKA 1 on every pair, penalty 0
    same = guidance_penalty(target, copy.deepcopy(target), x, [("0", "0"), ("2", "2")])
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-10)


def test_wrapper_state_loss_and_modes():
    target, guide, x = _nets()
    w = Guided(target, guide, [("2", "3")], weight=2.0)
    assert set(w.state_dict()) == {f"target.{k}" for k in target.state_dict()}
    assert {id(p) for p in w.parameters()} == {id(p) for p in target.parameters()}
    y = torch.arange(40) % 3
    loss = w.loss()
    w.train()
    out = w(x)
    ce = nn.functional.cross_entropy(out, y, reduction="none")
    assert torch.allclose(loss(out, y), ce + 2.0 * (1 - w.last_cka[0]), atol=1e-6)
    w.eval()
    with torch.no_grad():
        out = w(x)
    assert w.penalty is None and torch.allclose(loss(out, y), ce.detach(), atol=1e-6)


def test_training_in_the_loop_aligns_and_leaves_the_guide_unchanged():
    target, guide, x = _nets(1)
    g = torch.Generator().manual_seed(2)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    xt = torch.randn(40, 6, generator=g)
    data = TaskData("toy", Split(x, y), Split(xt, y), Split(xt, y), 3)
    guide_before = copy.deepcopy(guide.state_dict())
    pairs = [("2", "3")]
    start = float(guidance_penalty(target, guide, x, pairs).detach())
    unguided = copy.deepcopy(target)
    w = Guided(target, guide, pairs, weight=5.0)
    cfg = TrainConfig(30, 20, 60, OptimConfig("adam", lr=1e-2), loss=w.loss())
    res = train(w, data, cfg, data_seed=0)
    train(unguided, data, TrainConfig(30, 20, 60, OptimConfig("adam", lr=1e-2)), data_seed=0)
    assert not res.diverged
    assert all(torch.equal(guide_before[k], v) for k, v in guide.state_dict().items())
    after = float(guidance_penalty(target, guide, x, pairs).detach())
    other = float(guidance_penalty(unguided, guide, x, pairs).detach())
    assert after < start and after < other


def test_bad_input():
    target, guide, x = _nets()
    with pytest.raises(ConfigError, match="target layer 'fc' does not exist; its modules are: 0"):
        Guided(target, guide, [("fc", "0")])
    with pytest.raises(ConfigError, match="guide layer"):
        Guided(target, guide, [("0", "9")])
    with pytest.raises(ConfigError, match="at least one"):
        Guided(target, guide, [])
    with pytest.raises(ConfigError, match="fewer than 4|n > 3|4 examples"):
        guidance_penalty(target, guide, x[:3], [("0", "0")])
