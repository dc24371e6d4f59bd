"""Seeded SPSA / MeZO [#52]: regenerated perturbations, the 1-byte quantizer, byte counts and
bit-identical replicas in the simulated multi-worker run."""

import math

import pytest
import torch
from torch import nn

from weightlab.adapters.zeroth_order import (
    OneByteQuantizer,
    SPSAConfig,
    apply_update,
    direction,
    perturb,
    projected_gradient,
    run_spsa,
    shards,
)
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator, seeded_global_cpu_rng


def _task(n: int = 96, d: int = 5, c: int = 3) -> TaskData:
    g = generator(1)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    y = (x @ w).argmax(-1)
    s = Split(x, y)
    return TaskData("toy", s, s, s, c)


def _model() -> nn.Module:
    with seeded_global_cpu_rng(0):
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_perturbation_regenerated_from_seed_not_global_rng():
    m = _model()
    params = list(m.parameters())
    before = [p.detach().clone() for p in params]
    with seeded_global_cpu_rng(123):  # the global RNG's state must not matter
        perturb(params, seed=7, scale=0.5)
    delta1 = [p.detach() - b for p, b in zip(params, before, strict=True)]
    g = generator(7)
    for d, p in zip(delta1, params, strict=True):
        torch.testing.assert_close(d, 0.5 * torch.randn(p.shape, generator=g))
    state = torch.get_rng_state()
    perturb(params, seed=7, scale=-0.5)
    assert torch.equal(torch.get_rng_state(), state)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p, b)


def test_projected_gradient_matches_directional_derivative():
    """On a quadratic L(θ) = ½‖θ‖², the central difference is exact: g = θ·z."""
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    model = nn.Module()
    model.w = w
    g, _ = projected_gradient(model, lambda m: 0.5 * (m.w**2).sum(), seed=3, eps=1e-3)
    z = torch.randn(3, generator=generator(3)).double()
    assert g == pytest.approx(float(w.detach() @ z), rel=1e-6)
    # the update moves along z by -lr * g
    before = w.detach().clone()
    apply_update(model, 3, lr=0.1, grad=g)
    torch.testing.assert_close(w.detach(), before - 0.1 * g * z)


def test_stored_direction_equals_regeneration():
    m1, m2 = _model(), _model()
    x = torch.randn(4, 5, generator=generator(2))

    def loss(m):
        return (m(x) ** 2).mean()

    g1 = projected_gradient(m1, loss, seed=5, eps=1e-2)
    g2 = projected_gradient(m2, loss, 5, 1e-2, direction(list(m2.parameters()), 5))
    assert g1 == g2
    apply_update(m1, 5, 0.1, g1[0])
    apply_update(m2, 5, 0.1, g1[0], direction(list(m2.parameters()), 5))
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_one_byte_quantizer_stated_rule():
    q = OneByteQuantizer(0.05)
    assert len(q.encode(0.123)) == 1
    assert q.decode(q.encode(0.123)) == pytest.approx(0.10)  # round(2.46) = 2
    assert q.decode(q.encode(-0.138)) == pytest.approx(-0.15)  # round(-2.76) = -3
    assert q.decode(q.encode(100.0)) == pytest.approx(127 * 0.05)  # clipped
    assert q.decode(q.encode(-100.0)) == pytest.approx(-127 * 0.05)
    with pytest.raises(ConfigError, match="scale"):
        OneByteQuantizer(0.0)


def test_shards_disjoint_and_cover():
    parts = shards(10, 4, 0)
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [3, 3, 2, 2]


@pytest.mark.parametrize("quantizer,nbytes", [("1byte", 1), ("fp32", 4)])
def test_multiworker_bytes_and_bit_identical_replicas(quantizer, nbytes):
    cfg = SPSAConfig(
        lr=1e-2, eps=1e-3, steps=30, batch_size=8, workers=4, quantizer=quantizer, eval_every=10
    )
    res = run_spsa(_model(), _task(), cfg)
    assert res.bytes_per_worker == [[nbytes] * 4] * 30
    assert res.total_bytes == nbytes * 4 * 30
    assert res.replicas_identical is True
    assert [e["step"] for e in res.evals] == [10, 20, 30]
    # deterministic: the same config gives the same weights
    again = run_spsa(_model(), _task(), cfg)
    for a, b in zip(res.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_shared_and_per_worker_directions():
    data = _task()
    base = dict(lr=1e-2, eps=1e-3, steps=5, batch_size=8, workers=3, quantizer="1byte")
    shared = run_spsa(_model(), data, SPSAConfig(**base, directions="shared"))
    per = run_spsa(_model(), data, SPSAConfig(**base))
    assert shared.replicas_identical and per.replicas_identical
    assert shared.total_bytes == per.total_bytes == 15
    # different directions give different weights
    w_s, w_p = next(shared.model.parameters()), next(per.model.parameters())
    assert not torch.equal(w_s, w_p)
    with pytest.raises(ConfigError, match="directions"):
        SPSAConfig(directions="mine")


def test_one_worker_step_by_hand():
    """One worker, one step: θ₁ = θ₀ − lr · g · z with g from projected_gradient on the
    worker's batch (the whole 8-example shard)."""
    data = _task(n=8)
    cfg = SPSAConfig(lr=0.1, eps=1e-3, steps=1, batch_size=8, workers=1, seed=4)
    m0 = _model()
    res = run_spsa(m0, data, cfg)
    ref = _model()
    seed = derive_seed("spsa", 4, 0, 0)
    x, y = data.train.x, data.train.y
    loss = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    # the batch is a permutation of the shard: the same mean loss up to float32 summation
    # order, which the 1 / 2ε of the difference quotient amplifies
    g, _ = projected_gradient(ref, loss, seed, 1e-3)
    apply_update(ref, seed, 0.1, g)
    for a, b in zip(res.model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_spsa_lowers_training_loss():
    data = _task()
    cfg = SPSAConfig(lr=5e-2, eps=1e-3, steps=300, batch_size=24, workers=2, eval_every=300)
    m = _model()
    with torch.no_grad():
        start = float(nn.functional.cross_entropy(m(data.train.x), data.train.y))
    res = run_spsa(m, data, cfg)
    assert res.evals[-1]["loss"] < 0.9 * start
    assert math.isfinite(res.step_loss[-1])


def test_bad_config_one_line():
    with pytest.raises(ConfigError, match="quantizer"):
        SPSAConfig(quantizer="2bit")
    with pytest.raises(ConfigError, match="lr"):
        SPSAConfig(lr=-1.0)
