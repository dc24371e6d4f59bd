"""Trajectory-matching dataset distillation (MTT) with smoothed experts: the gradient
penalty's value by hand, expert trajectories from the one loop (clipping bounds the per-step
change), the matching loss of one unrolled step by hand, gradients reaching the synthetic
images, seeding, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, DataError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.probes.distill import (
    ExpertSmoothing,
    distill,
    gradient_penalty_loss,
    synthetic_task,
    train_experts,
)
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(n=60, d=6, k=3, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 2

    def split(m):
        y = torch.arange(m) % k
        return Split(centers[y] + 0.5 * torch.randn(m, d, generator=g), y)

    return TaskData("blobs", split(n), split(30), split(30), k)


FACTORY = model_factory(MLP, [6, 8, 3])
CFG = TrainConfig(4, 20, 0, OptimConfig("sgd", lr=0.1))


def test_gradient_penalty_by_hand():
    model = FACTORY(1)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    loss = gradient_penalty_loss(model, 0.3)
    ce = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(ce, list(model.parameters()))
    want = ce + 0.3 * sum((g * g).sum() for g in grads)
    assert torch.allclose(loss(model(x), y).mean(), want, atol=1e-6)
    with torch.no_grad():  # evaluation: plain cross-entropy
        assert torch.allclose(loss(model(x), y), F.cross_entropy(model(x), y, reduction="none"))


def test_plain_experts_are_the_loop_trajectory():
    data = _task()
    (traj,) = train_experts(FACTORY, data, CFG, [7])
    assert len(traj) == CFG.epochs + 1  # before training and after each epoch
    init = dict(FACTORY(7).named_parameters())
    assert all(torch.equal(traj[0][n], p.detach()) for n, p in init.items())
    model = FACTORY(7)
    train(model, data, CFG, 7, seed=7)  # data_seed = 0 + seed
    assert all(torch.allclose(traj[-1][n], p.detach()) for n, p in model.named_parameters())


def test_clipping_bounds_the_rate_of_change():
    data = _task()
    clip, lr, spe = 0.05, 0.1, 3
    (traj,) = train_experts(FACTORY, data, CFG, [7], smoothing=ExpertSmoothing(clip, 0.0))
    (free,) = train_experts(FACTORY, data, CFG, [7])

    def steps(tr):
        flat = [torch.cat([v.reshape(-1) for v in s.values()]) for s in tr]
        return [float((b - a).norm()) for a, b in zip(flat, flat[1:], strict=False)]

    assert max(steps(traj)) <= spe * lr * clip * (1 + 1e-4)  # ‖Δθ‖ ≤ lr·clip per step
    assert max(steps(free)) > spe * lr * clip  # unclipped moves faster


def _experts(data):
    return train_experts(FACTORY, data, TrainConfig(4, 20, 0, OptimConfig("sgd", lr=0.5)), [1, 2])


def test_matching_loss_of_one_step_by_hand():
    data = _task()
    trajs = _experts(data)
    ds = distill(
        FACTORY,
        data.train,
        3,
        trajs,
        2,
        seed=3,
        iterations=1,
        syn_steps=1,
        expert_epochs=1,
        max_start_epoch=1,
        init_lr=0.05,
    )
    # redo the first iteration by hand: same expert draw, same init images
    g = torch.Generator().manual_seed(3)
    pick = []
    for c in range(3):
        idx = (data.train.y == c).nonzero().reshape(-1)
        pick.append(idx[torch.randperm(len(idx), generator=g)[:2]])
    e = int(torch.randint(2, (1,), generator=g))
    x, y = data.train.x[torch.cat(pick)], data.train.y[torch.cat(pick)]
    model = FACTORY(0)
    model.load_state_dict(trajs[e][0], strict=False)
    ce = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(ce, list(model.parameters()))
    num = den = 0.0
    for (n, p), gr in zip(model.named_parameters(), grads, strict=True):
        num += float(((p.detach() - 0.05 * gr) - trajs[e][1][n]).pow(2).sum())
        den += float((trajs[e][0][n] - trajs[e][1][n]).pow(2).sum())
    assert ds.losses[0] == pytest.approx(num / den, rel=1e-4)
    assert not torch.equal(ds.x, x)  # the images received a gradient step
    assert ds.lr != 0.05  # and so did the learned lr
    assert ds.y.tolist() == y.tolist()


def test_distillation_lowers_the_matching_loss_and_is_seeded():
    data = _task()
    trajs = _experts(data)
    kw = dict(iterations=30, syn_steps=3, expert_epochs=2, max_start_epoch=2, lr_img=1.0)
    a = distill(FACTORY, data.train, 3, trajs, 1, seed=5, **kw)
    b = distill(FACTORY, data.train, 3, trajs, 1, seed=5, **kw)
    c = distill(FACTORY, data.train, 3, trajs, 1, seed=6, **kw)
    assert torch.equal(a.x, b.x) and a.losses == b.losses
    assert not torch.equal(a.x, c.x)
    assert sum(a.losses[-5:]) / 5 < sum(a.losses[:5]) / 5
    assert a.to_dict()["n"] == 3
    t = synthetic_task(data, a.x, a.y, "syn")
    assert len(t.train) == 3 and t.test is data.test


def test_bad_input():
    data = _task()
    trajs = _experts(data)
    with pytest.raises(DataError, match="fewer than ipc=50"):
        distill(FACTORY, data.train, 3, trajs, 50, seed=0, max_start_epoch=1, expert_epochs=1)
    with pytest.raises(ConfigError, match="have 4 epochs"):
        distill(FACTORY, data.train, 3, trajs, 1, seed=0, max_start_epoch=4, expert_epochs=2)
    with pytest.raises(ConfigError, match="at least one expert"):
        distill(FACTORY, data.train, 3, [], 1, seed=0)
    with pytest.raises(ConfigError, match=">= 0"):
        ExpertSmoothing(-1.0, 0.0)
