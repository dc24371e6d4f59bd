"""Mixed optimizer settings at full speed: a population whose members differ in learning
rate, schedule or parameter groups trains each config's members as one range of engine
positions (``optim.config_blocks``), whatever the members' order, and still equals each
member trained alone by the single-model loop (float64, ``population_helpers`` tolerances);
frozen members stay out of every call; the optimizer's views are built once, not per step."""

from __future__ import annotations

import population_helpers as helpers
import pytest
import torch
from population_helpers import F64

from weightlab.data import Split, TaskData
from weightlab.models import MLP, model_factory
from weightlab.population import MemberSpec, Population
from weightlab.population import optim as popt
from weightlab.population.optim import FlatLayout, PopulationOptimizer, config_blocks
from weightlab.seeding import generator
from weightlab.train import OptimConfig, ParamGroup, Schedule, TrainConfig
from weightlab.train.probes import weight_norm

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(epochs=6, batch_size=32, eval_every=20)  # 60 steps
MLP_REG = model_factory(MLP, [6, 12, 12, 2])
GROUPS = (ParamGroup(("layers.2.*",), lr_mult=0.25), ParamGroup(("*.bias",), wd_mult=0.0))
# three settings differing in lr, schedule and parameter groups
CONFIGS = (
    OptimConfig("adam", lr=2e-3),
    OptimConfig("adam", lr=4e-3, schedule=Schedule("cosine", warmup_steps=10)),
    OptimConfig("adamw", lr=8e-3, weight_decay=0.05, groups=GROUPS),
)


def _regression(n_train: int = 320, d_in: int = 6, d_out: int = 2) -> TaskData:
    """y = tanh(x A) B + small noise: smooth, so float64 steps are not chaotic."""
    g = generator(7)
    a, b = torch.randn(d_in, 8, generator=g), torch.randn(8, d_out, generator=g) / 3

    def split(n: int) -> Split:
        x = torch.randn(n, d_in, generator=g)
        return Split(x, torch.tanh(x @ a) @ b + 0.01 * torch.randn(n, d_out, generator=g))

    return TaskData("teacher", split(n_train), split(64), split(64), 0, kind="regression")


REG = _regression()


def _specs(order: str, n: int = 6) -> list[MemberSpec]:
    """``n`` members over :data:`CONFIGS`: ``blocks`` (0 0 1 1 2 2) or ``interleaved``
    (0 1 2 0 1 2); member ``i`` has seed ``i`` in both orders."""
    k = len(CONFIGS)
    pick = (lambda i: i * k // n) if order == "blocks" else (lambda i: i % k)
    return [MemberSpec(seed=i, optim=CONFIGS[pick(i)]) for i in range(n)]


class Recorder:
    """The PopulationOptimizers built during a test (``made``) and how many times any of
    them built a list of views (``pieces``: calls of ``FlatLayout.pieces``)."""

    def __init__(self) -> None:
        self.made: list[PopulationOptimizer] = []
        self.pieces = 0


@pytest.fixture
def optimizers(monkeypatch) -> Recorder:
    rec = Recorder()
    init, pieces = PopulationOptimizer.__init__, FlatLayout.pieces

    def record(self, *a, **kw):
        init(self, *a, **kw)
        rec.made.append(self)

    def counted(self, *a, **kw):
        rec.pieces += 1
        return pieces(self, *a, **kw)

    monkeypatch.setattr(PopulationOptimizer, "__init__", record)
    monkeypatch.setattr(FlatLayout, "pieces", counted)
    return rec


def test_config_blocks_known_orders():
    assert config_blocks(list("abacb")) == [0, 2, 1, 4, 3]
    assert config_blocks(list("aabbc")) == [0, 1, 2, 3, 4]  # already in blocks: identity
    assert config_blocks(["x"] * 4) == [0, 1, 2, 3]  # one config: identity
    interleaved = [i % 8 for i in range(16)]
    assert config_blocks(interleaved) == [j for k in range(8) for j in (k, k + 8)]


@pytest.mark.parametrize("order", ["blocks", "interleaved"])
def test_mixed_lr_schedule_groups_equal_the_loop_in_either_order(order, optimizers):
    specs = _specs(order)
    _, results, _ = helpers.check(MLP_REG, specs, REG, CFG, probes=(weight_norm(20),))
    (opt,) = optimizers.made
    # one range of consecutive engine positions per config, one call per (config, group)
    assert {c.slot: c.runs for c in opt._calls} == {0: [(0, 2)], 1: [(2, 4)], 2: [(4, 6)]}
    assert len(opt._calls) > len(CONFIGS)  # the groups split config 2's call
    assert sum(len(c.params) for c in opt._calls) == 3 * 6  # 6 parameters per config
    assert [r.history[-1].step for r in results] == [60] * 6


def test_plan_is_built_once_not_per_step(optimizers):
    lrs = [2.5e-4 * 2**k for k in range(4)]
    specs = [MemberSpec(seed=i, optim=OptimConfig("adam", lr=lrs[i % 4])) for i in range(8)]
    counts = []
    for epochs in (2, 6):  # 20 and 60 updates
        before = optimizers.pieces
        pop = Population(MLP_REG, specs, dtype=F64)
        steps = epochs * 10
        results = pop.fit(REG, TrainConfig(epochs=epochs, batch_size=32), snapshot_steps=[steps])
        counts.append(optimizers.pieces - before)
        for i, r in enumerate(results):  # engine positions map back to members
            for k, v in pop.state(i).items():
                assert torch.equal(r.snapshots[steps][k], v), (i, k)
    assert counts[0] == counts[1] > 0  # views built at construction and first bind only
    for opt in optimizers.made:
        assert [len(c.runs) for c in opt._calls] == [1] * 4  # one range per lr
        assert sum(len(c.params) for c in opt._calls) == 4 * 6  # 6 parameters each


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_frozen_members_stay_out_of_every_call(monkeypatch, fused):
    monkeypatch.setitem(popt._FUSED, "cpu", fused)
    shapes = {"w": torch.Size((3, 4)), "b": torch.Size((3,))}
    cfgs = [CONFIGS[i % 2] for i in range(6)]  # interleaved: 0 1 0 1 0 1
    layout = FlatLayout(6, shapes)
    g = generator(3)
    flat = torch.randn(layout.total, generator=g, dtype=F64)
    opt = PopulationOptimizer(flat, layout, cfgs, total_steps=10)
    grad = torch.empty_like(flat)
    for t in range(10):
        grad.copy_(torch.randn(layout.total, generator=g, dtype=F64))
        if t == 3:
            opt.freeze([1, 2])
            held = {k: v.clone() for k, v in layout.views(flat).items()}
            moments = {k: v[[1, 2]].clone() for k, v in layout.views(opt.exp_avg_sq).items()}
        opt.step(grad)
    for k, v in layout.views(flat).items():
        assert torch.equal(v[[1, 2]], held[k][[1, 2]]), k
        assert torch.equal(layout.views(opt.exp_avg_sq)[k][[1, 2]], moments[k]), k
        assert (v[[0, 3, 4, 5]] != held[k][[0, 3, 4, 5]]).all(), k  # the others moved on
    # the plan skips them: config 0 keeps members 0 and 4, config 1 keeps 3 and 5
    assert [c.runs for c in opt._calls] == [[(0, 1), (4, 5)], [(3, 4), (5, 6)]]


def test_diverged_member_in_an_interleaved_population_is_isolated():
    bad = OptimConfig("sgd", lr=1e6, momentum=0.9)
    specs = [MemberSpec(seed=i, optim=CONFIGS[0] if i % 2 == 0 else bad) for i in range(4)]
    _, results, solos = helpers.check(MLP_REG, specs, REG, CFG)
    assert [r.diverged for r in results] == [False, True, False, True]
    assert results[1].diverged_step == solos[1].diverged_step == 20
