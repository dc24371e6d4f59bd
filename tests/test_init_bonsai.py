"""Bonsai / RFC pieces: group encoding, V-REx (hand-computed, population shapes), the
discovery criterion (hand-computed), distillation (equals KL), and a small end-to-end run
where round 2 learns a feature round 1 ignored."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from weightlab.data.task import TaskData, make_split
from weightlab.errors import ConfigError
from weightlab.init.bonsai import (
    discovery_loss,
    distill_loss,
    encode_groups,
    rich_feature_construction,
    vrex_loss,
)
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    env = torch.tensor([0, 0, 0, 1, 1, 1])
    return pred, y, env


def test_vrex_matches_hand_computation_and_population_shapes():
    pred, y, env = _batch()
    ce = F.cross_entropy(pred, y, reduction="none")
    r0, r1 = ce[:3].mean(), ce[3:].mean()
    want = (r0 + r1) / 2 + 10.0 * ((r0 - r1) / 2) ** 2
    got = vrex_loss(2, 2, 10.0)(pred, encode_groups(y, env, 2))
    assert got.shape == (6,)
    torch.testing.assert_close(got.mean(), want)
    torch.testing.assert_close(
        vrex_loss(2, 2, 0.0)(pred, encode_groups(y, env, 2)).mean(), (r0 + r1) / 2
    )
    stacked = torch.stack([pred, 2 * pred])  # (N, B, C) as a population passes it
    out = vrex_loss(2, 2, 10.0)(stacked, encode_groups(y, env, 2))
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[0].mean(), want)
    with pytest.raises(ConfigError, match=">= 0"):
        vrex_loss(2, 2, -1.0)


def test_discovery_criterion_is_balanced_max_over_rounds():
    pred, y, _ = _batch()
    ce = F.cross_entropy(pred, y, reduction="none")
    wrong1 = torch.tensor([1, 0, 0, 0, 1, 1])  # B_1: network 1's mistakes
    wrong2 = torch.tensor([0, 0, 1, 1, 1, 0])
    one = discovery_loss(2, 1)(pred, encode_groups(y, wrong1, 2))
    want1 = (ce[wrong1 == 0].mean() + ce[wrong1 == 1].mean()) / 2
    torch.testing.assert_close(one.mean(), want1)
    two = discovery_loss(2, 2)(pred, encode_groups(y, wrong1 | (wrong2 << 1), 2))
    want2 = (ce[wrong2 == 0].mean() + ce[wrong2 == 1].mean()) / 2
    torch.testing.assert_close(two.mean(), torch.maximum(want1, want2))


def test_distill_loss_is_sum_of_per_head_kl():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    got = distill_loss(2, 2)(s, t)
    want = sum(
        F.kl_div(
            s[:, 2 * k : 2 * k + 2].log_softmax(-1),
            t[:, 2 * k : 2 * k + 2].log_softmax(-1),
            reduction="none",
            log_target=True,
        ).sum(-1)
        for k in range(2)
    )
    torch.testing.assert_close(got, want)
    assert float(distill_loss(2, 2)(t, t).abs().max()) < 1e-6


def _two_feature_task() -> TaskData:
    """Label y; feature 0 = y (flipped 10%), feature 1 = y (flipped 25%), plus noise dims."""
    g = torch.Generator().manual_seed(2)
    n = 600
    y = torch.randint(0, 2, (n,), generator=g)
    f0 = y ^ (torch.rand(n, generator=g) < 0.1).long()
    f1 = y ^ (torch.rand(n, generator=g) < 0.25).long()
    x = torch.cat(
        [(2.0 * f0 - 1)[:, None], (2.0 * f1 - 1)[:, None], 0.1 * torch.randn(n, 4, generator=g)], 1
    )
    split = lambda a, b: make_split(x[a:b].numpy(), y[a:b].numpy())  # noqa: E731
    return TaskData("two", split(0, 400), split(400, 500), split(500, 600), 2)


def test_rich_feature_construction_finds_a_second_feature():
    data = _two_feature_task()
    f = model_factory(MLP, [6, 16, 16, 2])
    syn = model_factory(MLP, [6, 16, 16, 4])
    cfg = TrainConfig(15, 50, 0, OptimConfig("adam", lr=1e-2))
    res = rich_feature_construction(f, syn, data, cfg, rounds=2, seed=0)
    assert len(res.discovered) == 2 and len(res.synthesis_fidelity) == 2
    # round 1 (ERM) uses the 90% feature; round 2 is balanced on its right/wrong halves,
    # where feature 0 is useless, so it must lean on feature 1 (75%)
    w1 = res.discovered[0]["layers.0.weight"].abs().sum(0)
    w2 = res.discovered[1]["layers.0.weight"].abs().sum(0)
    assert w1[0] / w1[1] > w2[0] / w2[1]
    assert res.round_train_acc[0] == pytest.approx(0.9, abs=0.05)
    assert min(res.synthesis_fidelity) > 0.8
    assert set(res.backbone) >= {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    with pytest.raises(ConfigError, match=">= 1 discovery round"):
        rich_feature_construction(f, syn, data, cfg, rounds=0, seed=0)
