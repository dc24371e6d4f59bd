"""random-teachers [#33]: the DINO network, near-teacher init, loss, engines, claim logic."""

import math

import pytest
import torch

from weightlab.dynamics.random_teachers import (
    DinoLoss,
    DinoNet,
    distillation_targets,
    near_teacher,
)
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.recipes.dynamics.random_teachers import RandomTeachers, RandomTeachersConfig


def test_dino_net_shapes_and_normalized_head():
    net = DinoNet()
    assert net.feature_dim == 224  # 40 -> 18 -> 7 positions x 32 channels
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    assert net.features(x).shape == (5, 224)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (5, 1024)
    # L2-normalized bottleneck times unit-norm rows: every logit is a cosine
    assert float(out.abs().max()) <= 1 + 1e-6
    net.last.weight.data *= 7.0  # the row norms do not matter
    with torch.no_grad():
        assert torch.allclose(net(x), out, atol=1e-6)
    with pytest.raises(ConfigError, match="too short"):
        DinoNet(length=8)


def test_near_teacher_interpolates_and_keeps_the_scale():
    f = model_factory(DinoNet)
    t, fr = f(0).state_dict(), f(1).state_dict()
    assert all(torch.equal(near_teacher(t, fr, 0.0)[k], t[k]) for k in t)
    assert all(torch.allclose(near_teacher(t, fr, 1.0)[k], fr[k]) for k in t)
    mid = near_teacher(t, fr, 0.5)
    w = "head.0.weight"
    expect = math.sqrt(0.75) * t[w] + 0.5 * fr[w]
    assert torch.allclose(mid[w], expect)
    assert float(mid[w].std()) == pytest.approx(float(t[w].std()), rel=0.02)
    with pytest.raises(ConfigError, match=r"eps must lie in \[0, 1\]"):
        near_teacher(t, fr, 1.5)


def test_dino_loss_hand_values():
    loss = DinoLoss()
    k = 8
    zero = torch.zeros(3, k)
    assert torch.allclose(loss(zero, zero), torch.full((3,), math.log(k)))
    t = torch.randn(3, k, generator=torch.Generator().manual_seed(1))
    p = torch.softmax(t / 0.04, -1)
    entropy = -(p * p.log()).sum(-1)
    # the student matching the sharpened teacher reaches the teacher's entropy, the minimum
    best = loss(t * (0.1 / 0.04), t)
    assert torch.allclose(best, entropy, atol=1e-5)
    assert bool((loss(t, t) > best).all())
    # population shape: (N, B, K) predictions against (B, K) targets
    assert loss(torch.stack([t, zero]), t).shape == (2, 3)


def test_population_equals_the_loop_on_distillation():
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members
    from weightlab.train.config import OptimConfig, TrainConfig

    f = model_factory(DinoNet, channels=4, hidden=16, out_dim=16)
    g = torch.Generator().manual_seed(2)
    x, xt = torch.randn(64, 40, generator=g), torch.randn(32, 40, generator=g)
    teacher = f(0)
    task = distillation_targets(teacher, x, xt, "t")
    assert len(task.val) == 0 and task.train.y.shape == (64, 16)
    cfg = TrainConfig(2, 16, 0, OptimConfig("adamw", lr=1e-3, weight_decay=0.04), loss=DinoLoss())
    fresh = f(1).state_dict()
    specs = [
        MemberSpec(seed=i, init_state=near_teacher(teacher.state_dict(), fresh, e), data_seed=3)
        for i, e in enumerate((1e-3, 1.0))
    ]
    pop, _ = train_members(f, specs, task, cfg, engine="population")
    loop, _ = train_members(f, specs, task, cfg, engine="loop")
    for a, b in zip(pop, loop, strict=True):
        assert a.final.test_loss == pytest.approx(b.final.test_loss, rel=1e-4)
        assert a.final.train_loss == pytest.approx(b.final.train_loss, rel=1e-4)


def _row(arm, inputs, eps, acc, gain, fell=True):
    return {
        "arm": arm,
        "inputs": inputs,
        "eps": eps,
        "probe_acc_mean": acc,
        "probe_acc_std": 0.5,
        "probe_acc_values": [acc],
        "gain_mean": gain,
        "gain_std": 0.5,
        "loss_fell": fell,
        "excluded": [],
    }


def _summary(close_gain, far_gain, gauss_gain, teacher=60.0, fell=True):
    rows = [
        _row("teacher", "none", None, teacher, None, None),
        _row("data eps=0.001", "data", 1e-3, teacher + close_gain, close_gain, fell),
        _row("data eps=0.5", "data", 0.5, teacher, 0.0, fell),
        _row("data eps=1", "data", 1.0, teacher + far_gain, far_gain, fell),
        _row("gaussian eps=0.001", "gaussian", 1e-3, teacher + gauss_gain, gauss_gain, fell),
    ]
    return {"rows": rows, "chance_pct": 10.0}


def test_claim_logic():
    c1, c2, c3 = RandomTeachers.check_claims(_summary(4.0, 1.0, 0.5))
    assert (c1.held, c2.held, c3.held) == (True, True, True)
    c1, c2, c3 = RandomTeachers.check_claims(_summary(4.0, 3.5, 3.0))
    assert (c1.held, c2.held, c3.held) == (True, False, False)
    c1, c2, c3 = RandomTeachers.check_claims(_summary(1.0, -1.0, 0.0))
    assert c1.held is False and c2.held is None and "(1) did not hold" in c2.detail
    assert c3.held is True
    c1, c2, c3 = RandomTeachers.check_claims(_summary(4.0, 1.0, 0.5, fell=False))
    assert c3.held is None and "did not fall" in c3.detail
    c1, c2, c3 = RandomTeachers.check_claims(_summary(4.0, 1.0, 0.5, teacher=15.0))
    assert c1.held is None and c2.held is None and c3.held is None


def test_config_checks():
    with pytest.raises(
        ConfigError,
        match=r"--eps must be strictly increasing numbers in \(0, 1\].*0 is out of range",
    ):
        RandomTeachersConfig(eps="0,0.5")
    with pytest.raises(ConfigError, match=r"--eps must be strictly.*0.1 does not increase on 0.5"):
        RandomTeachersConfig(eps="0.5,0.1")
    r = RandomTeachers()
    with pytest.raises(ConfigError, match="--train-examples 5000 exceeds"):
        r.validate(RandomTeachersConfig(train_examples=5000), {"train": 3500})
    with pytest.raises(ConfigError, match="--batch-size 256 exceeds the 100"):
        r.validate(RandomTeachersConfig(train_examples=100), {"train": 3500})
