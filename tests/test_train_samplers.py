"""Samplers (weightlab.train.samplers) and the explicit-order hook of the loop and the
population: RS2 covers every example once before repeating, static subsets stay in their
subset, the default order is unchanged bit for bit, an explicit order equals the default
when it is the default, population members follow their own orders, and bad orders are
one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightlab.core import take_snapshot
from weightlab.data.task import TaskData, make_split
from weightlab.errors import ConfigError
from weightlab.models import MLP, build, model_factory
from weightlab.population import MemberSpec, Population
from weightlab.recipes.members import train_members
from weightlab.train import OptimConfig, TrainConfig, batch_indices, train
from weightlab.train.samplers import (
    check_order,
    rs2_order,
    rs2_subset_size,
    static_subset_order,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> TaskData:
    """8 features, 3 classes from a random linear teacher; 90 / 30 / 30 examples."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 3))
    splits = []
    for n in (90, 30, 30):
        x = rng.standard_normal((n, 8))
        splits.append(make_split(x, (x @ w).argmax(1)))
    return TaskData("toy", *splits, num_classes=3)


def test_rs2_covers_every_example_once_before_repeating():
    n, f, b = 100, 0.3, 10
    m = rs2_subset_size(n, f, b)
    assert m == 30
    order = rs2_order(n, f, b, epochs=10, seed=4)
    assert order.shape == (10 * 3, b)
    flat = order.reshape(-1)
    # every block of n consecutive draws (a permutation of the stream) is all n examples
    for k in range(len(flat) // n):
        assert sorted(flat[k * n : (k + 1) * n].tolist()) == list(range(n))
    # the first ceil(n / m) = 4 rounds see every example; the first 3 rounds repeat none
    first3 = flat[: 3 * m].tolist()
    assert len(set(first3)) == 3 * m
    assert set(flat[: 4 * m].tolist()) == set(range(n))
    # each round is a fresh subset: rounds differ
    assert set(flat[:m].tolist()) != set(flat[m : 2 * m].tolist())
    # deterministic per seed, different across seeds
    assert torch.equal(order, rs2_order(n, f, b, 10, seed=4))
    assert not torch.equal(order, rs2_order(n, f, b, 10, seed=5))


def test_rs2_steps_override_continues_the_stream():
    full = rs2_order(50, 0.4, 5, epochs=7, seed=1)  # 4 steps per round, 28 steps
    assert torch.equal(rs2_order(50, 0.4, 5, epochs=1, seed=1, steps=28), full)
    assert torch.equal(rs2_order(50, 0.4, 5, epochs=1, seed=1, steps=9), full[:9])
    # f = 1 is a permutation per round: the loop's per-epoch reshuffle, batches whole
    one = rs2_order(20, 1.0, 5, epochs=3, seed=2).reshape(3, -1)
    assert all(sorted(r.tolist()) == list(range(20)) for r in one)


def test_static_subset_order_stays_in_the_subset_and_reshuffles():
    keep = torch.tensor([3, 7, 11, 20, 21, 40, 41, 42, 50, 60, 61])  # 11 examples
    order = static_subset_order(keep, 5, epochs=4, seed=0)
    assert order.shape == (8, 5)  # 2 full batches per epoch, 1 example dropped per epoch
    assert set(order.reshape(-1).tolist()) <= set(keep.tolist())
    epochs = order.reshape(4, 10)
    assert all(len(set(e.tolist())) == 10 for e in epochs)  # no repeats within an epoch
    assert len({tuple(e.tolist()) for e in epochs}) == 4  # a fresh permutation per epoch
    assert torch.equal(static_subset_order(keep, 5, 1, 0, steps=8), order)
    assert static_subset_order(keep, 5, 1, 0, steps=3).shape == (3, 5)
    # the whole split as the subset reproduces the default order's epochs' contents
    allidx = torch.arange(30)
    assert static_subset_order(allidx, 10, 2, 0).shape == batch_indices(30, 10, 2, 0).shape


def test_default_order_unchanged_bit_for_bit(data):
    # the default order itself (a fixed small case)
    assert batch_indices(6, 2, 2, 0).tolist() == _expected_default()
    cfg = TrainConfig(3, 15, 0, OptimConfig("sgd", lr=0.1, momentum=0.9))
    a = build(MLP, [8, 16, 3], seed=1)
    b = build(MLP, [8, 16, 3], seed=1)
    ra = train(a, data, cfg, data_seed=5)
    rb = train(b, data, cfg, data_seed=5, order=batch_indices(90, 15, 3, 5))
    for k, v in take_snapshot(a).items():
        assert torch.equal(v, take_snapshot(b)[k])
    assert [p.to_dict() for p in ra.history] == [p.to_dict() for p in rb.history]


def _expected_default() -> list[list[int]]:
    """``batch_indices(6, 2, 2, 0)`` as the loop has always drawn it (one randperm of the
    split per epoch from ``generator(0)``)."""
    from weightlab.seeding import generator

    g = generator(0)
    perms = torch.cat([torch.randperm(6, generator=g) for _ in range(2)])
    return perms.view(6, 2).tolist()


def test_explicit_order_sets_the_steps_and_the_batches(data):
    keep = torch.arange(0, 90, 3)  # 30 examples
    order = static_subset_order(keep, 10, epochs=4, seed=2)  # 12 steps
    cfg = TrainConfig(1, 10, 0, OptimConfig("sgd", lr=0.05))
    seen = []

    def record(model, ctx):
        seen.append(ctx.x.clone())

    model = build(MLP, [8, 16, 3], seed=0)
    res = train(model, data, cfg, data_seed=0, order=order, callbacks=[record])
    assert len(seen) == 12 and res.final.step == 12
    for t, x in enumerate(seen):
        assert torch.equal(x, data.train.x[order[t]])
    # evaluation every full-data epoch (9 steps) and at the end
    assert [p.step for p in res.history] == [9, 12]


def test_population_follows_each_members_order(data):
    fac = model_factory(MLP, [8, 16, 3])
    cfg = TrainConfig(2, 10, 0, OptimConfig("adam", lr=1e-2))
    orders = {
        11: rs2_order(90, 0.5, 10, 1, seed=11, steps=18),
        12: static_subset_order(torch.arange(40), 10, 1, seed=12, steps=18),
    }
    specs = [MemberSpec(seed=0, data_seed=11), MemberSpec(seed=1, data_seed=12)]
    res_p, fin_p = train_members(fac, specs, data, cfg, engine="population", orders=orders)
    res_l, fin_l = train_members(fac, specs, data, cfg, engine="loop", orders=orders)
    for a, b in zip(fin_p, fin_l, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert [p.step for p in res_p[0].history] == [p.step for p in res_l[0].history] == [9, 18]
    # default orders are unchanged: explicit batch_indices gives the same weights bit for bit
    plain = Population(fac, [MemberSpec(seed=0)], data_seed=0)
    plain.fit(data, cfg)
    explicit = Population(fac, [MemberSpec(seed=0)], data_seed=0)
    explicit.fit(data, cfg, orders={0: batch_indices(90, 10, 2, 0)})
    for k, v in plain.state(0).items():
        assert torch.equal(v, explicit.state(0)[k])


def test_bad_orders_are_one_line_errors(data):
    cfg = TrainConfig(1, 10)
    model = build(MLP, [8, 16, 3], seed=0)
    bad = [
        (torch.zeros(3, 5, dtype=torch.long), "batch size is 10"),
        (torch.zeros(3, 10), "integer"),
        (torch.zeros(30, dtype=torch.long), "2-D"),
        (torch.full((3, 10), 90), "outside the training split"),
        (torch.zeros(0, 10, dtype=torch.long), "no steps"),
        ([[0] * 10], "tensor"),
    ]
    for order, msg in bad:
        with pytest.raises(ConfigError, match=msg) as e:
            train(model, data, cfg, data_seed=0, order=order)
        assert "\n" not in str(e.value)
    fac = model_factory(MLP, [8, 16, 3])
    pop = Population(fac, [MemberSpec(seed=0, data_seed=1), MemberSpec(seed=1, data_seed=2)])
    before = pop.state(0)
    with pytest.raises(ConfigError, match=r"data seed\(s\) \[2\]"):
        pop.fit(data, cfg, orders={1: batch_indices(90, 10, 1, 1)})
    with pytest.raises(ConfigError, match="different step counts"):
        pop.fit(data, cfg, orders={1: batch_indices(90, 10, 1, 1), 2: batch_indices(90, 10, 2, 2)})
    for k, v in before.items():
        assert torch.equal(v, pop.state(0)[k])  # nothing trained
    for args, msg in [
        ((100, 0.0, 10), "fraction"),
        ((100, 1.5, 10), "fraction"),
        ((100, 0.05, 10), "less than one batch"),
        ((5, 0.5, 10), "larger than"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            rs2_subset_size(*args)
    with pytest.raises(ConfigError, match="twice"):
        static_subset_order([1, 1, 2], 1, 1, 0)
    with pytest.raises(ConfigError, match="larger than the subset"):
        static_subset_order([1, 2], 3, 1, 0)
    with pytest.raises(ConfigError, match="positive integer"):
        rs2_order(100, 0.5, 10, 0, 0)
    assert check_order(torch.zeros(2, 3, dtype=torch.int32), 5, 3).dtype == torch.long


def test_width_sweep_takes_orders_too(data):
    facs = {16: model_factory(MLP, [8, 16, 3]), 24: model_factory(MLP, [8, 24, 3])}
    cfg = TrainConfig(1, 10, 0, OptimConfig("sgd", lr=0.1))
    orders = {7: rs2_order(90, 0.4, 10, 1, seed=7, steps=12)}
    sweep = Population.sweep(facs, [(w, MemberSpec(seed=1, data_seed=7)) for w in facs])
    sweep.fit(data, cfg, orders=orders)
    for j, w in enumerate(facs):
        alone = Population(facs[w], [MemberSpec(seed=1, data_seed=7)])
        alone.fit(data, cfg, orders=orders)
        for k, v in alone.state(0).items():
            assert torch.equal(v, sweep.state(j)[k])
