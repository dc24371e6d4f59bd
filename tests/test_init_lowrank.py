"""Low-rank and task-aligned low-rank init (methods row [#5])."""

import math

import pytest
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init import get_initializer, initialize
from weightlab.init.registry import InitContext
from weightlab.init.signal import effective_rank
from weightlab.seeding import generator


def _rank(w: torch.Tensor) -> int:
    sv = torch.linalg.svdvals(w.detach().double().reshape(w.shape[0], -1))
    return int((sv > 1e-5 * sv[0]).sum())  # float32-stored weights: relative tolerance


def _ctx(shape, seed=0, target=None, name="w"):
    return InitContext(
        name=name,
        module=nn.Identity(),
        fan_in=math.prod(shape[1:]),
        fan_out=shape[0],
        index=0,
        depth=1,
        activation="relu",
        generator=generator(seed),
        target=target,
    )


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_rank_and_frobenius_match(rank):
    shape = (64, 48)
    w = get_initializer("low_rank", rank=rank).weight(torch.Size(shape), _ctx(shape, 5))
    assert int(torch.linalg.matrix_rank(w)) == rank
    # exactly the norm of the same generator's full-rank He draw
    full = get_initializer("low_rank", rank="full").weight(torch.Size(shape), _ctx(shape, 5))
    assert float(w.norm()) == pytest.approx(float(full.double().norm()), rel=1e-12)
    # which matches He's expected squared norm: rows * cols * 2 / fan_in
    assert float(full.norm()) ** 2 == pytest.approx(64 * 48 * 2 / 48, rel=0.05)


def test_expected_norm_over_draws_and_glorot_base():
    shape = (20, 30)
    sq = [
        float(
            get_initializer("low_rank", rank=2, base="glorot").weight(shape, _ctx(shape, s)).norm()
        )
        ** 2
        for s in range(200)
    ]
    assert sum(sq) / len(sq) == pytest.approx(20 * 30 * 2 / 50, rel=0.03)


def test_effective_rank_grows_with_rank():
    shape = (64, 64)
    er = [
        effective_rank(get_initializer("low_rank", rank=r).weight(shape, _ctx(shape, 1)))
        for r in (1, 2, 4, 8, None)
    ]
    assert er[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a < b for a, b in zip(er[:-1], er[1:], strict=True))
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)


def test_aligned_rows_lie_in_target_top_directions():
    g = generator(0)
    u, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    s = torch.tensor([5.0, 3.0, 2.0, 1.0] + [0.0] * 6, dtype=torch.float64)
    target = (u * s) @ v[:, :10].T  # (10, 30): top right singular vectors v[:, :4]
    shape = (16, 30)  # a student with another number of units: random left factor
    init = get_initializer("aligned_low_rank", rank=2)
    w = init.weight(torch.Size(shape), _ctx(shape, 2, target))
    proj = w @ v[:, :2] @ v[:, :2].T
    assert torch.allclose(proj, w, atol=1e-10)  # rows in span of the top-2 directions
    sv = torch.linalg.svdvals(w)
    assert sv[0] == pytest.approx(float(sv[1]))  # equal singular values
    assert float(sv[2]) < 1e-10
    full = get_initializer("he").weight(torch.Size(shape), _ctx(shape, 2))
    assert float(w.norm()) == pytest.approx(float(full.double().norm()), rel=1e-12)
    # same number of rows: the target's own left vectors, W ∝ U_r V_rᵀ
    w2 = init.weight(torch.Size((10, 30)), _ctx((10, 30), 2, target))
    ref = u[:, :2] @ v[:, :2].T
    assert torch.allclose(w2 / w2.norm(), ref / ref.norm(), atol=1e-10)


def test_initialize_model_with_mapping_target_and_errors():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    t = torch.randn(3, 8, generator=generator(0))
    with pytest.raises(ConfigError, match="needs target"):
        initialize(model, "aligned_low_rank", seed=0, rank=1)
    with pytest.raises(ConfigError, match="no matrix for"):
        initialize(model, "aligned_low_rank", seed=0, rank=1, target={"0.weight": t})
    before = model[0].weight.clone()
    with pytest.raises(ConfigError, match="does not fit"):
        initialize(model, "aligned_low_rank", seed=0, rank=1, target=t)  # layer 2 has 6 inputs
    assert torch.equal(before, model[0].weight)  # nothing written
    tgt = {"0.weight": t, "2.weight": torch.randn(2, 6, generator=generator(1))}
    initialize(model, "aligned_low_rank", seed=0, rank=1, target=tgt)
    assert _rank(model[0].weight) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="rank"):
            get_initializer("low_rank", rank=bad)
    with pytest.raises(ConfigError, match="recurse"):
        get_initializer("low_rank", base="low_rank")
    with pytest.raises(ConfigError, match="unknown init scheme"):
        get_initializer("low_rank", base="nope")


def test_conv_weight_and_determinism():
    conv = nn.Conv1d(4, 8, 3)
    initialize(conv, "low_rank", seed=1, rank=2)
    assert _rank(conv.weight) == 2
    other = nn.Conv1d(4, 8, 3)
    initialize(other, "low_rank", seed=1, rank=2)
    assert torch.equal(other.weight, conv.weight)
