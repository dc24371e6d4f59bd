"""Hourglass blocks, the frozen random lift and parameter counts (weightlab/hyper/hourglass.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.hourglass import (
    ConventionalNet,
    FrozenRandomProjection,
    HourglassBlock,
    HourglassNet,
    conventional_factory,
    conventional_parameters,
    hourglass_factory,
    hourglass_parameters,
    parameter_count,
)
from weightlab.models.factory import build
from weightlab.population import MemberSpec
from weightlab.recipes.members import train_members
from weightlab.seeding import generator
from weightlab.train.config import OptimConfig, TrainConfig


def test_block_is_h_plus_up_gelu_down_layernorm():
    blk = build(HourglassBlock, 8, 3, seed=0)
    with torch.no_grad():
        blk.norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
        blk.norm.bias.copy_(torch.linspace(-0.2, 0.2, 8))
    h = torch.randn(5, 8, generator=generator(1))
    mu = h.mean(-1, keepdim=True)
    var = h.var(-1, unbiased=False, keepdim=True)
    z = (h - mu) / torch.sqrt(var + 1e-5) * blk.norm.weight + blk.norm.bias
    a = z @ blk.down.weight.T + blk.down.bias
    g = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))  # exact GELU
    want = h + g @ blk.up.weight.T + blk.up.bias
    torch.testing.assert_close(blk(h), want, atol=1e-6, rtol=1e-6)
    assert blk.down.weight.shape == (3, 8) and blk.up.weight.shape == (8, 3)
    with torch.no_grad():  # a zero residual branch is the identity (the skip at full width)
        blk.up.weight.zero_()
        blk.up.bias.zero_()
    torch.testing.assert_close(blk(h), h)


def test_frozen_projection_is_a_seeded_gaussian_buffer():
    p = FrozenRandomProjection(256, 512, seed=3)
    assert [n for n, _ in p.named_parameters()] == []
    assert [n for n, _ in p.named_buffers()] == ["weight"]
    w = p.weight
    assert w.shape == (512, 256) and not w.requires_grad
    assert abs(float(w.mean())) < 0.003
    assert float(w.var()) == pytest.approx(1 / 256, rel=0.02)  # N(0, 1/in), 131k entries
    torch.testing.assert_close(FrozenRandomProjection(256, 512, seed=3).weight, w, rtol=0, atol=0)
    assert not torch.equal(FrozenRandomProjection(256, 512, seed=4).weight, w)
    x = torch.randn(4, 256, generator=generator(0))
    torch.testing.assert_close(p(x), x @ w.T)
    # reset_parameters redraws the same matrix (build() calls it for modules it does not know)
    with torch.no_grad():
        p.weight.zero_()
    p.reset_parameters()
    torch.testing.assert_close(p.weight, w, rtol=0, atol=0)


def test_trainable_and_low_rank_lifts():
    frozen = FrozenRandomProjection(64, 128, seed=7)
    trained = FrozenRandomProjection(64, 128, seed=7, trainable=True)
    assert isinstance(trained.weight, torch.nn.Parameter) and trained.weight.requires_grad
    torch.testing.assert_close(trained.weight.detach(), frozen.weight, rtol=0, atol=0)
    low = FrozenRandomProjection(64, 128, seed=7, rank=16)
    sv = torch.linalg.svdvals(low.weight.double())
    assert float(sv[15] / sv[0]) > 1e-3 and float(sv[16] / sv[0]) < 1e-5  # rank 16
    big = FrozenRandomProjection(200, 400, seed=1, rank=16)
    assert float(big.weight.var()) == pytest.approx(1 / 200, rel=0.1)  # same entry variance


def test_parameter_counts_include_the_frozen_lift():
    net = HourglassNet(64, 128, 16, 2)
    trainable = sum(p.numel() for p in net.parameters())
    assert trainable == 25440 - 64 * 128  # blocks + head
    assert parameter_count(net) == hourglass_parameters(64, 128, 16, 2) == 25440
    assert parameter_count(HourglassNet(64, 128, 16, 2, train_lift=True)) == 25440
    assert parameter_count(ConventionalNet(64, 64, 1)) == conventional_parameters(64, 64, 1) == 8448
    for depth, width, b in [(4, 256, 64), (2, 256, 32), (4, 128, 16)]:
        assert parameter_count(HourglassNet(64, width, b, depth)) == hourglass_parameters(
            64, width, b, depth
        )
    assert parameter_count(ConventionalNet(64, 256, 4)) == conventional_parameters(64, 256, 4)
    assert parameter_count(HourglassNet(64, 256, 64, 4)) == 167232  # over the 140k budget


def test_factories_share_all_but_the_lift():
    frozen = hourglass_factory(64, 128, 16, 2)(5)
    trained = hourglass_factory(64, 128, 16, 2, train_lift=True)(5)
    low = hourglass_factory(64, 128, 16, 2, lift_rank=16)(5)
    sf = dict(frozen.state_dict())
    for other in (trained, low):
        so = other.state_dict()
        assert set(so) == set(sf)
        for k in sf:
            if k != "lift.weight":
                torch.testing.assert_close(so[k], sf[k], rtol=0, atol=0)
    torch.testing.assert_close(trained.state_dict()["lift.weight"], sf["lift.weight"])
    assert not torch.equal(low.state_dict()["lift.weight"], sf["lift.weight"])
    assert not torch.equal(hourglass_factory(64, 128, 16, 2)(6).lift.weight, frozen.lift.weight)
    c = conventional_factory(64, 64, 2)(0)
    assert isinstance(c, ConventionalNet) and len(c.blocks) == 2


def _tiny_task(n=96, d=16) -> TaskData:
    g = generator(11)
    y = torch.rand(n + 64, d, generator=g)
    x = y + 0.3 * torch.randn(n + 64, d, generator=g)
    sp = [Split(x[a:b], y[a:b]) for a, b in ((0, n), (n, n + 32), (n + 32, n + 64))]
    return TaskData("tiny", *sp, 0, "regression")


def test_frozen_lift_never_moves_and_the_population_matches_the_loop():
    data = _tiny_task()
    cfg = TrainConfig(3, 32, 0, OptimConfig("adam", lr=1e-2), loss="mse")
    specs = [MemberSpec(seed=s, data_seed=10 + s) for s in range(2)]
    fac = hourglass_factory(16, 32, 4, 2)
    res_p, fin_p = train_members(fac, specs, data, cfg, engine="population")
    res_l, fin_l = train_members(fac, specs, data, cfg, engine="loop")
    for i, s in enumerate(range(2)):
        w0 = fac(s).lift.weight
        torch.testing.assert_close(fin_p[i]["lift.weight"], w0, rtol=0, atol=0)
        torch.testing.assert_close(fin_l[i]["lift.weight"], w0, rtol=0, atol=0)
        assert not torch.equal(fin_l[i]["head.weight"], fac(s).head.weight)
        for k in fin_l[i]:
            torch.testing.assert_close(fin_p[i][k], fin_l[i][k], atol=2e-5, rtol=1e-4)
        assert res_p[i].final.test_loss == pytest.approx(res_l[i].final.test_loss, rel=1e-4)
    trained = hourglass_factory(16, 32, 4, 2, train_lift=True)
    _, fin_t = train_members(trained, specs[:1], data, cfg, engine="population")
    assert not torch.equal(fin_t[0]["lift.weight"], trained(0).lift.weight)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FrozenRandomProjection(16, 32, seed=0, rank=17),
        lambda: FrozenRandomProjection(0, 32, seed=0),
        lambda: HourglassBlock(8, 0),
        lambda: HourglassNet(64, 128, 16, 0),
        lambda: ConventionalNet(64, -1, 2),
    ],
)
def test_bad_sizes_are_one_line_config_errors(make):
    with pytest.raises(ConfigError) as e:
        make()
    assert "\n" not in str(e.value)


def test_gelu_block_matches_functional_form_in_float64():
    blk = build(HourglassBlock, 6, 2, seed=1).double()
    h = torch.randn(3, 6, generator=generator(2), dtype=torch.float64)
    want = h + blk.up(F.gelu(blk.down(F.layer_norm(h, (6,), blk.norm.weight, blk.norm.bias))))
    torch.testing.assert_close(blk(h), want, rtol=0, atol=0)
