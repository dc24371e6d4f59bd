"""Every loss, optimizer, parameter group, schedule, clipping mode and probe of the training
stack trains in a Population with each member equal to the single-model loop
(``weightlab.train.train``), in float64 at non-chaotic settings: 100 steps, rtol 1e-4,
atol 1e-6. Also: divergence isolation, up-front config errors, save/load integrity."""

from __future__ import annotations

import json
from dataclasses import replace

import population_helpers as helpers
import pytest
import torch
from population_helpers import F64, random_mask
from torch import nn
from torch.nn import functional as F

from weightlab.data import Split, TaskData
from weightlab.errors import ConfigError, RunFileError
from weightlab.models import MLP, model_factory
from weightlab.population import MemberSpec, Population
from weightlab.population import optim as popt
from weightlab.population.optim import FlatLayout, PopulationOptimizer
from weightlab.seeding import generator
from weightlab.train import OptimConfig, ParamGroup, Schedule, TrainConfig
from weightlab.train.probes import (
    Probe,
    distance_from_init,
    grad_norm,
    relative_change,
    train_loss,
    weight_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- tasks -------------------------------------------------------------------------------
def _regression(n_train: int = 320, d_in: int = 6, d_out: int = 2, seed: int = 0) -> TaskData:
    """y = tanh(x A) B + small noise: smooth, so 100 float64 steps are not chaotic."""
    g = generator(seed)
    a, b = torch.randn(d_in, 8, generator=g), torch.randn(8, d_out, generator=g) / 3

    def split(n: int) -> Split:
        x = torch.randn(n, d_in, generator=g)
        return Split(x, torch.tanh(x @ a) @ b + 0.01 * torch.randn(n, d_out, generator=g))

    return TaskData("teacher", split(n_train), split(64), split(64), 0, kind="regression")


def _classification(n_train: int = 320, d_in: int = 6, classes: int = 3) -> TaskData:
    g = generator(1)
    centers = 2 * torch.randn(classes, d_in, generator=g)

    def split(n: int) -> Split:
        y = torch.randint(0, classes, (n,), generator=g)
        return Split(centers[y] + torch.randn(n, d_in, generator=g), y)

    return TaskData("blobs", split(n_train), split(64), split(64), classes)


REG, CLS = _regression(), _classification()
MLP_REG = model_factory(MLP, [6, 16, 16, 2])
MLP_CLS = model_factory(MLP, [6, 16, 3])


class Tiny(nn.Module):
    """A non-MLP module (generic torch.func path): Linear -> Tanh -> Linear in a Sequential,
    plus a skip Linear."""

    def __init__(self, d_in: int = 6, d_out: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 12), nn.Tanh(), nn.Linear(12, d_out))
        self.skip = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


TINY = model_factory(Tiny)
CFG = TrainConfig(epochs=10, batch_size=32, eval_every=25)  # 100 steps


# -- helpers -----------------------------------------------------------------------------
def check(factory, specs, data, cfg=CFG, **kw):
    """:func:`population_helpers.check` (population vs the loop, member by member) with this
    module's 100-step config by default; returns (population, results, solo results)."""
    return helpers.check(factory, specs, data, cfg, **kw)


def grad_max(every: int) -> Probe:
    """A user probe: the largest |gradient entry| (masked, before clipping) of the step."""

    def fn(model, ctx):
        if ctx.grads is None:
            return {}
        return {"max": max(float(g.abs().max()) for g in ctx.grads.values())}

    return Probe("gmax", every, fn)


# -- optimizer unit test -----------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_optimizer_matches_torch_optim_with_groups_schedules_clipping(monkeypatch, fused):
    monkeypatch.setitem(popt._FUSED, "cpu", fused)
    shapes = {"a.weight": (3, 4), "a.bias": (3,), "b.weight": (2, 3)}
    groups = (ParamGroup(("b.*",), lr_mult=0.5), ParamGroup(("*.bias",), wd_mult=0.0))
    cos = Schedule("cosine", warmup_steps=3, min_lr_ratio=0.1)
    cfgs = [
        OptimConfig("adam", lr=1e-2, weight_decay=1e-2, groups=groups),
        OptimConfig("adamw", lr=1e-2, weight_decay=0.1, schedule=cos, clip_norm=0.5),
        OptimConfig("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_norm=1.0),
        OptimConfig("sgd", lr=0.1, clip_value=0.05, schedule=Schedule("step", step_size=4)),
        OptimConfig("adamw", lr=1e-2, weight_decay=0.1, schedule=cos, clip_norm=0.5),
        OptimConfig("sgd", lr=0.1, momentum=0.5, groups=groups),
    ]
    mults = {"a.weight": (1.0, 1.0), "a.bias": (1.0, 0.0), "b.weight": (0.5, 1.0)}
    n, steps = len(cfgs), 12
    g = generator(0)
    init = {k: torch.randn(n, *s, generator=g, dtype=F64) for k, s in shapes.items()}
    grads = [
        {k: torch.randn(n, *s, generator=g, dtype=F64) for k, s in shapes.items()}
        for _ in range(steps)
    ]
    layout = FlatLayout(n, {k: torch.Size(s) for k, s in shapes.items()})
    flat = torch.empty(layout.total, dtype=F64)
    for k, v in layout.views(flat).items():
        v.copy_(init[k])
    multipliers = {c: mults for c in cfgs if c.groups}
    opt = PopulationOptimizer(flat, layout, cfgs, total_steps=steps, multipliers=multipliers)
    assert opt.fused is fused
    buf = torch.empty_like(flat)
    scales = []
    for t in range(steps):
        for k, v in layout.views(buf).items():
            v.copy_(grads[t][k])
        opt.step(buf)
        scales.append(opt.last_clip_scale.clone())
    assert (torch.stack(scales)[:, 1] < 1).any()  # norm clipping was active
    for i, c in enumerate(cfgs):
        ps = {k: init[k][i].clone().requires_grad_() for k in shapes}
        kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        extra = {"momentum": c.momentum, "nesterov": c.nesterov} if c.name == "sgd" else {}
        by_mult: dict = {}
        for k in shapes:
            by_mult.setdefault(mults[k] if c.groups else (1.0, 1.0), []).append(ps[k])
        pgs = [
            {"params": v, "lr": c.lr * lm, "weight_decay": c.weight_decay * wm, "m": lm}
            for (lm, wm), v in by_mult.items()
        ]
        ref = kinds[c.name](pgs, lr=c.lr, **extra)
        for t in range(steps):
            for k, p in ps.items():
                p.grad = grads[t][k][i].clone()
            if c.clip_value:
                torch.nn.utils.clip_grad_value_(list(ps.values()), c.clip_value)
            if c.clip_norm:
                torch.nn.utils.clip_grad_norm_(list(ps.values()), c.clip_norm)
            for pg in ref.param_groups:
                pg["lr"] = c.lr * pg["m"] * c.schedule.factor(t, steps)
            ref.step()
        for k in shapes:
            torch.testing.assert_close(layout.view(flat, k)[i], ps[k].detach(), msg=f"{i} {k}")


# -- losses and tasks --------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "sin"])
def test_mse_regression_mlp_fast_path(activation):
    f = model_factory(MLP, [6, 16, 16, 2], activation=activation)
    specs = [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=3)]
    cfg = replace(CFG, optim=OptimConfig("adam", lr=3e-3))
    _, results, _ = check(f, specs, REG, cfg)
    last = results[0].final
    assert last.val_acc is None and last.val_r2 is not None and last.val_r2 > 0.3
    assert last.test_rel_err is not None and 0 < last.test_rel_err < 1


def test_mse_regression_generic_path():
    specs = [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=2)]
    cfg = replace(CFG, optim=OptimConfig("adam", lr=3e-3))
    _, results, _ = check(TINY, specs, REG, cfg)
    assert results[1].final.val_r2 > 0.3


class Grid(nn.Module):
    """Outputs of shape (2, 3) per example (a regression target that is not a vector)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).unflatten(-1, (2, 3))


def test_regression_targets_of_any_shape():
    flat = _regression(d_out=6, seed=3)

    def grid(split: Split) -> Split:
        return Split(split.x, split.y.view(-1, 2, 3))

    data = TaskData("grid", grid(flat.train), grid(flat.val), grid(flat.test), 0, "regression")
    assert data.output_shape == (2, 3)
    cfg = replace(CFG, optim=OptimConfig("adam", lr=3e-3))
    _, results, _ = check(
        model_factory(Grid), [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=1)], data, cfg
    )
    assert results[0].final.val_r2 is not None


def _huber(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(pred, target, reduction="none", beta=0.5).mean(-1)


@pytest.mark.parametrize("factory", [MLP_REG, TINY], ids=["mlp", "generic"])
def test_custom_callable_loss(factory):
    """MLP: ∂L/∂pred by autograd on the output only; generic path: the callable in vmap's
    stacked output."""
    cfg = replace(CFG, loss=_huber, optim=OptimConfig("adam", lr=3e-3))
    check(factory, [MemberSpec(seed=0), MemberSpec(seed=4, data_seed=1)], REG, cfg)


def test_mse_on_class_labels_and_cross_entropy_on_regression():
    cfg = replace(CFG, loss="mse", optim=OptimConfig("sgd", lr=0.1))
    check(MLP_CLS, [MemberSpec(seed=0), MemberSpec(seed=1)], CLS, cfg)
    with pytest.raises(ConfigError, match="classification"):
        Population(MLP_REG, [MemberSpec()]).fit(REG, replace(CFG, loss="cross_entropy"))


# -- optimizers, schedules, groups, clipping --------------------------------------------
def test_sgd_nesterov_and_adamw():
    specs = [
        MemberSpec(seed=0, optim=OptimConfig("sgd", lr=0.05, momentum=0.9, nesterov=True)),
        MemberSpec(seed=1, optim=OptimConfig("adamw", lr=3e-3, weight_decay=0.05)),
    ]
    check(MLP_CLS, specs, CLS)
    check(TINY, specs, REG)


def test_per_member_schedules():
    step = Schedule("step", step_size=30, gamma=0.5)
    cosine = Schedule("cosine", warmup_steps=20, min_lr_ratio=0.05)
    specs = [
        MemberSpec(seed=0, optim=OptimConfig("adam", lr=5e-3, schedule=step)),
        MemberSpec(seed=1, optim=OptimConfig("adam", lr=5e-3, schedule=cosine)),
        MemberSpec(seed=2, optim=OptimConfig("sgd", lr=0.1, momentum=0.9, schedule=cosine)),
    ]
    check(MLP_REG, specs, REG)


MUP_GROUPS = (ParamGroup(("layers.2.*",), lr_mult=0.25), ParamGroup(("*.bias",), wd_mult=0.0))


@pytest.mark.parametrize("factory", [MLP_REG, TINY], ids=["mlp", "generic"])
def test_two_param_groups_mup_style(factory):
    groups = (
        MUP_GROUPS
        if factory is MLP_REG
        else (ParamGroup(("body.2.*",), lr_mult=0.25), ParamGroup(("*.bias",), wd_mult=0.0))
    )
    specs = [
        MemberSpec(seed=0, optim=OptimConfig("adamw", lr=3e-3, weight_decay=0.1, groups=groups)),
        MemberSpec(seed=1, optim=OptimConfig("sgd", lr=0.05, weight_decay=1e-3, groups=groups)),
        MemberSpec(seed=2, optim=OptimConfig("adamw", lr=3e-3, weight_decay=0.1)),
    ]
    check(factory, specs, REG)


def test_clip_value_and_clip_norm_are_active_and_match():
    specs = [
        MemberSpec(seed=0, optim=OptimConfig("sgd", lr=0.05, momentum=0.9, clip_value=0.02)),
        MemberSpec(seed=1, optim=OptimConfig("sgd", lr=0.05, momentum=0.9, clip_norm=0.05)),
        MemberSpec(seed=2, optim=OptimConfig("adam", lr=3e-3, clip_norm=0.05)),
    ]
    probes = (grad_norm(1), grad_max(1))
    _, results, _ = check(MLP_REG, specs, REG, probes=probes)
    gmax = [r["gmax/max"] for r in results[0].probes if "gmax/max" in r]
    assert max(gmax) > 0.02  # entries were clamped
    for i in (1, 2):
        norms = [r["grad_norm"] for r in results[i].probes if "grad_norm" in r]
        assert max(norms) > 0.05  # whole gradients were rescaled


def test_full_batch_gradient_descent():
    data = _regression(n_train=64)
    cfg = TrainConfig(epochs=100, batch_size=64, eval_every=20, optim=OptimConfig("sgd", lr=0.1))
    specs = [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=9)]
    _, results, _ = check(MLP_REG, specs, data, cfg)
    assert results[0].final.train_loss < results[0].history[0].train_loss


def test_mixed_configs_in_one_population_with_unfused_fallback(monkeypatch):
    specs = [
        MemberSpec(seed=0, optim=OptimConfig("adam", lr=3e-3, weight_decay=1e-3)),
        MemberSpec(seed=1, data_seed=5, optim=OptimConfig("adamw", lr=2e-3, weight_decay=0.1)),
        MemberSpec(seed=2, optim=OptimConfig("sgd", lr=0.05, momentum=0.9, nesterov=True)),
        MemberSpec(seed=3, optim=OptimConfig("adam", lr=3e-3, groups=MUP_GROUPS)),
        MemberSpec(seed=4, optim=OptimConfig("sgd", lr=0.05, clip_norm=0.05)),
        MemberSpec(seed=5, optim=OptimConfig("adam", lr=3e-3, weight_decay=1e-3)),
    ]
    check(MLP_REG, specs, REG)
    monkeypatch.setitem(popt._FUSED, "cpu", False)
    check(MLP_REG, specs[:4], REG)


def test_masks_with_adamw_weight_decay_stay_exactly_zero():
    masks = {
        "layers.0.weight": random_mask((16, 6), 1),
        "layers.1.weight": random_mask((16, 16), 2),
    }
    optim = OptimConfig("adamw", lr=3e-3, weight_decay=0.1, groups=MUP_GROUPS)
    specs = [MemberSpec(seed=0, masks=masks, optim=optim), MemberSpec(seed=1, optim=optim)]
    pop, _, _ = check(MLP_REG, specs, REG)
    for k, m in masks.items():
        assert torch.equal(pop.state(0)[k][m == 0], torch.zeros(int((m == 0).sum()), dtype=F64))


# -- divergence --------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [MLP_REG, TINY], ids=["mlp", "generic"])
def test_diverged_member_is_flagged_and_isolated(factory):
    good = [
        MemberSpec(seed=0, optim=OptimConfig("adam", lr=3e-3, clip_norm=1.0)),
        MemberSpec(seed=1, optim=OptimConfig("sgd", lr=0.05, momentum=0.9)),
    ]
    bad = MemberSpec(seed=2, optim=OptimConfig("sgd", lr=1e6, momentum=0.9))
    specs = [good[0], bad, good[1]]
    pop, results, solos = check(factory, specs, REG, probes=(weight_norm(10),))
    assert results[1].diverged and results[1].diverged_step == 25
    assert results[1].history[-1].step == 25 and solos[1].diverged_step == 25
    assert results[1].probes[-1]["step"] <= 25
    assert not results[0].diverged and not results[2].diverged
    alone = Population(factory, good, dtype=F64)
    ref = alone.fit(REG, CFG, probes=(weight_norm(10),))
    for j, i in ((0, 0), (1, 2)):
        for k, v in alone.state(j).items():
            assert torch.equal(pop.state(i)[k], v), k
        assert [p.to_dict() for p in ref[j].history] == [p.to_dict() for p in results[i].history]
    frozen = pop.state(1)
    assert not all(torch.isfinite(v).all() for v in frozen.values())


# -- probes ------------------------------------------------------------------------------
def _probes():
    return (
        weight_norm(10),
        distance_from_init(20),
        relative_change(25, params=("layers.0.*", "body.0.*")),
        grad_norm(10),
        train_loss(50),
        grad_max(50),
        Probe("w00", 30, lambda m, ctx: next(iter(m.parameters())).flatten()[:3].clone()),
    )


@pytest.mark.parametrize("factory", [MLP_REG, TINY], ids=["mlp", "generic"])
def test_probes_equal_the_loop(factory):
    masks = {"layers.0.weight": random_mask((16, 6), 3)} if factory is MLP_REG else None
    specs = [
        MemberSpec(seed=0, masks=masks, optim=OptimConfig("adam", lr=3e-3, clip_norm=0.1)),
        MemberSpec(seed=1, data_seed=4),
    ]
    _, results, _ = check(factory, specs, REG, probes=_probes())
    rows = results[0].probes
    assert rows[0]["step"] == 0 and "grad_norm" not in rows[0]
    assert rows[0]["distance_from_init"] == 0.0
    keys = set().union(*rows)
    assert {"weight_norm/body.0.weight", "weight_norm/layers.0.weight"} & keys
    assert {"train_loss", "grad_norm", "gmax/max", "w00"} <= keys


# -- up-front errors and files ------------------------------------------------------------
def test_config_errors_before_training():
    pop = Population(MLP_REG, [MemberSpec(seed=0)])
    before = pop.state(0)
    with pytest.raises(ConfigError, match="snapshot step 101"):
        pop.fit(REG, CFG, snapshot_steps=(0, 101))
    with pytest.raises(ConfigError, match="snapshot step -1"):
        pop.fit(REG, CFG, snapshot_steps=(-1,))
    long_warmup = OptimConfig("adam", schedule=Schedule("cosine", warmup_steps=500))
    with pytest.raises(ConfigError, match="warm-up"):
        pop.fit(REG, replace(CFG, optim=long_warmup))
    nothing = OptimConfig("adam", groups=(ParamGroup(("head.*",), lr_mult=2.0),))
    with pytest.raises(ConfigError, match="matches no parameter"):
        pop.fit(REG, replace(CFG, optim=nothing))
    for k, v in before.items():
        assert torch.equal(pop.state(0)[k], v)


def test_save_load_hash_and_version(tmp_path):
    optim = OptimConfig(
        "adamw",
        lr=2e-3,
        weight_decay=0.1,
        groups=MUP_GROUPS,
        schedule=Schedule("cosine", warmup_steps=5),
    )
    specs = [MemberSpec(seed=0, optim=optim), MemberSpec(seed=1, data_seed=3)]
    pop = Population(MLP_REG, specs, dtype=F64)
    pop.fit(REG, TrainConfig(1, 32))
    pop.save(tmp_path / "pop")
    manifest = json.loads((tmp_path / "pop" / "manifest.json").read_text())
    assert manifest["version"] == 2 and len(manifest["weights_sha256"]) == 64
    back = Population.load(tmp_path / "pop", MLP_REG)
    assert back.dtype == F64 and back.specs[0].optim == optim
    for i in range(2):
        for k, v in pop.state(i).items():
            assert torch.equal(back.state(i)[k], v)

    weights = tmp_path / "pop" / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(RunFileError, match="SHA-256") as e:
        Population.load(tmp_path / "pop", MLP_REG)
    assert "\n" not in str(e.value)

    pop.save(tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFileError, match="version 99"):
        Population.load(tmp_path / "v", MLP_REG)
