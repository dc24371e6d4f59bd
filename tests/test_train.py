"""The single-model loop: optimizers, groups, clipping and schedules equal to hand-written
torch loops (float64); losses and regression metrics; divergence; seeded dropout; probes;
bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from weightlab.core import Selector, apply_masks, take_snapshot
from weightlab.data.task import Split, TaskData, make_regression_split, make_split
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, build
from weightlab.models.dropout import dropout_input_shapes, dropout_masks, replace_dropout, use_masks
from weightlab.seeding import generator
from weightlab.train import (
    OptimConfig,
    ParamGroup,
    Probe,
    Schedule,
    TrainConfig,
    batch_indices,
    distance_from_init,
    evaluate,
    grad_norm,
    relative_change,
    train,
    train_loss,
    weight_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def _np(*shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture(scope="module")
def cls_data() -> TaskData:
    """6 features, 3 classes from a random linear teacher; 96 / 32 / 32 examples."""
    w = _np(6, 3, seed=1)
    splits = []
    for i, n in enumerate((96, 32, 32)):
        x = _np(n, 6, seed=10 + i)
        splits.append(make_split(x, (x @ w).argmax(1)))
    return TaskData("toy", *splits, num_classes=3)


@pytest.fixture(scope="module")
def reg_data() -> TaskData:
    """Linear teacher 5 -> 2 with Gaussian noise (std 0.05); 200 / 50 / 50 examples."""
    w = _np(5, 2, seed=2)
    splits = []
    for i, n in enumerate((200, 50, 50)):
        x = _np(n, 5, seed=20 + i)
        splits.append(make_regression_split(x, x @ w + 0.05 * _np(n, 2, seed=30 + i)))
    return TaskData("teacher", *splits, num_classes=0, kind="regression")


def mlp(seed=0, widths=(6, 8, 3)):
    return build(MLP, list(widths), seed=seed)


def reference(model, data, cfg, make_opt, data_seed=0, sched=None, clip=None, on_grad=None):
    """A hand-written torch loop over the same batches (float64)."""
    model = model.to(F64)
    x, y = data.train.x.to(F64), data.train.y
    y = y.to(F64) if y.is_floating_point() else y
    opt = make_opt(model)
    lr_sched = sched(opt) if sched is not None else None
    for idx in batch_indices(len(data.train), cfg.batch_size, cfg.epochs, data_seed):
        out = model(x[idx])
        loss = F.mse_loss(out, y[idx]) if y.is_floating_point() else F.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        if on_grad is not None:
            on_grad(model)
        if clip is not None:
            clip(model.parameters())
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
    return model


def assert_same_weights(a: nn.Module, b: nn.Module, rtol=1e-10, atol=1e-12):
    sa, sb = take_snapshot(a), take_snapshot(b)
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, msg=k)


# ---------------------------------------------------------------- schedules


def _torch_lrs(make_sched, steps, lr=1.0):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_schedule_factors_equal_torch_lr_schedulers():
    total = 20
    step = Schedule("step", step_size=3, gamma=0.5)
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), total)
    assert [step.factor(s, total) for s in range(total)] == pytest.approx(want, rel=1e-12)
    cos = Schedule("cosine", min_lr_ratio=0.1)
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.1),
        total,
    )
    assert [cos.factor(s, total) for s in range(total)] == pytest.approx(want, rel=1e-9)
    warm = Schedule(warmup_steps=5)
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / 5, 1.0, total_iters=4), total
    )
    assert [warm.factor(s, total) for s in range(total)] == pytest.approx(want, rel=1e-12)
    # warm-up then cosine over the remaining steps (SequentialLR)
    both = Schedule("cosine", warmup_steps=4, min_lr_ratio=0.2)
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 1 / 4, 1.0, total_iters=3),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - 4, eta_min=0.2),
            ],
            milestones=[4],
        ),
        total,
    )
    assert [both.factor(s, total) for s in range(total)] == pytest.approx(want, rel=1e-9)


def test_loop_schedule_equals_torch_scheduler(cls_data):
    cfg = TrainConfig(
        epochs=4,
        batch_size=16,
        optim=OptimConfig("sgd", lr=0.1, schedule=Schedule("step", step_size=5, gamma=0.5)),
    )
    got = mlp()
    train(got, cls_data, cfg, 0, dtype=F64)
    want = reference(
        mlp(),
        cls_data,
        cfg,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        sched=lambda o: torch.optim.lr_scheduler.StepLR(o, 5, 0.5),
    )
    assert_same_weights(got, want)


# ---------------------------------------------------------------- optimizers


def test_adamw_with_warmup_cosine_equals_torch_loop(cls_data):
    sched = Schedule("cosine", warmup_steps=3, min_lr_ratio=0.1)
    optim = OptimConfig("adamw", lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), schedule=sched)
    cfg = TrainConfig(epochs=5, batch_size=16, optim=optim)
    total = 5 * 6
    got = mlp()
    train(got, cls_data, cfg, 3, dtype=F64)
    want = reference(
        mlp(),
        cls_data,
        cfg,
        lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
        data_seed=3,
        sched=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: sched.factor(s, total)),
    )
    assert_same_weights(got, want)


def test_nesterov_sgd_full_batch_equals_torch_loop(cls_data):
    optim = OptimConfig("sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    cfg = TrainConfig(epochs=20, batch_size=len(cls_data.train), optim=optim)
    got = mlp()
    res = train(got, cls_data, cfg, 0, dtype=F64)
    assert len(res.history) == 20  # full batch: one step per epoch
    want = reference(
        mlp(),
        cls_data,
        cfg,
        lambda m: torch.optim.SGD(
            m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
        ),
    )
    assert_same_weights(got, want)


def test_groups_apply_multipliers(cls_data):
    groups = (
        ParamGroup(("layers.0.*",), lr_mult=0.0),
        ParamGroup(Selector(roles=("last",)), lr_mult=2.0, wd_mult=0.5),
    )
    optim = OptimConfig("adamw", lr=0.01, weight_decay=0.2, groups=groups)
    cfg = TrainConfig(epochs=3, batch_size=16, optim=optim)
    got = mlp()
    before = take_snapshot(got)
    train(got, cls_data, cfg, 0, dtype=F64)
    after = take_snapshot(got)
    for k in ("layers.0.weight", "layers.0.bias"):  # lr 0: decoupled decay lr*wd is 0 too
        torch.testing.assert_close(after[k], before[k].to(F64), rtol=0, atol=0)

    def make(m):
        return torch.optim.AdamW(
            [
                {"params": [m.layers[0].weight, m.layers[0].bias], "lr": 0.0},
                {"params": [m.layers[1].weight], "lr": 0.02, "weight_decay": 0.1},
                {"params": [m.layers[1].bias]},
            ],
            lr=0.01,
            weight_decay=0.2,
        )

    assert_same_weights(got, reference(mlp(), cls_data, cfg, make))


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clipping_equals_torch_utilities(cls_data, mode):
    kw = {"clip_value": 0.05} if mode == "value" else {"clip_norm": 0.1}
    optim = OptimConfig("sgd", lr=0.5, momentum=0.5, **kw)
    cfg = TrainConfig(epochs=3, batch_size=16, optim=optim)
    got = mlp()
    train(got, cls_data, cfg, 0, dtype=F64)
    if mode == "value":

        def clip(ps):
            return nn.utils.clip_grad_value_(ps, 0.05)
    else:

        def clip(ps):
            return nn.utils.clip_grad_norm_(ps, 0.1)

    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.5)  # noqa: E731
    want = reference(mlp(), cls_data, cfg, make, clip=clip)
    assert_same_weights(got, want)
    unclipped = reference(mlp(), cls_data, cfg, make)
    assert not torch.allclose(got.layers[0].weight, unclipped.layers[0].weight)


# ---------------------------------------------------------------- losses and metrics


def test_regression_on_linear_teacher(reg_data):
    cfg = TrainConfig(epochs=40, batch_size=20, optim=OptimConfig("adam", lr=0.02))
    model = build(MLP, [5, 2], seed=0)
    res = train(model, reg_data, cfg, 0)
    last = res.final
    assert last.val_acc is None and last.test_acc is None
    assert last.val_r2 > 0.9 and last.test_r2 > 0.9 and last.test_rel_err < 0.2
    assert set(last.to_dict()) >= {"val_r2", "test_rel_err"} and "val_acc" not in last.to_dict()
    loss, r2, rel = evaluate(model, reg_data.test, kind="regression")
    assert (loss, r2, rel) == pytest.approx((last.test_loss, last.test_r2, last.test_rel_err))
    with torch.no_grad():
        assert loss == pytest.approx(float(F.mse_loss(model(reg_data.test.x), reg_data.test.y)))
    # full-batch gradient descent also fits it
    gd = TrainConfig(epochs=200, batch_size=200, optim=OptimConfig("sgd", lr=0.3))
    m2 = build(MLP, [5, 2], seed=1)
    assert train(m2, reg_data, gd, 0).final.val_r2 > 0.9


def test_custom_callable_loss(reg_data):
    def twice_mse(pred, target):
        return 2 * ((pred - target) ** 2).mean(-1)

    base = TrainConfig(epochs=2, batch_size=20, optim=OptimConfig("sgd", lr=0.1))
    custom = TrainConfig(epochs=2, batch_size=20, optim=OptimConfig("sgd", lr=0.05), loss=twice_mse)
    a, b = build(MLP, [5, 2], seed=0), build(MLP, [5, 2], seed=0)
    ra = train(a, reg_data, base, 0, dtype=F64)
    rb = train(b, reg_data, custom, 0, dtype=F64)
    assert_same_weights(a, b)  # 2 * MSE at lr/2 is the same SGD update
    assert rb.final.val_loss == pytest.approx(2 * ra.final.val_loss, rel=1e-9)
    assert rb.final.val_r2 == pytest.approx(ra.final.val_r2, rel=1e-9)
    bad = TrainConfig(epochs=1, batch_size=20, loss=lambda p, t: ((p - t) ** 2).mean())
    with pytest.raises(ConfigError, match=r"per-example losses of shape \(20,\)"):
        train(build(MLP, [5, 2], seed=0), reg_data, bad, 0)


def test_evaluate_is_backward_compatible(cls_data):
    model = mlp()
    loss, acc = evaluate(model, cls_data.test)
    with torch.no_grad():
        logits = model(cls_data.test.x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, cls_data.test.y)), rel=1e-6)
    assert acc == float((logits.argmax(1) == cls_data.test.y).float().mean())


def test_mse_on_classification_uses_one_hot(cls_data):
    cfg = TrainConfig(epochs=2, batch_size=16, optim=OptimConfig("sgd", lr=0.1), loss="mse")
    got = mlp()
    res = train(got, cls_data, cfg, 0, dtype=F64)
    assert res.final.val_acc is not None
    with torch.no_grad():
        onehot = F.one_hot(cls_data.val.y, 3).to(F64)
        want = float(F.mse_loss(got(cls_data.val.x.to(F64)), onehot))
    assert res.final.val_loss == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------- divergence


def test_divergence_flags_member_and_stops(reg_data):
    cfg = TrainConfig(epochs=10, batch_size=20, eval_every=5, optim=OptimConfig("sgd", lr=1e3))
    model = build(MLP, [5, 16, 2], seed=0)
    seen = []
    res = train(model, reg_data, cfg, 0, on_eval=lambda p, m: seen.append(p.step))
    assert res.diverged and res.diverged_step == res.history[-1].step == seen[-1]
    assert res.diverged_step < 100
    assert not math.isfinite(res.history[-1].train_loss)
    assert all(math.isfinite(p.train_loss) for p in res.history[:-1])
    ok = train(build(MLP, [5, 2], seed=0), reg_data, TrainConfig(epochs=1, batch_size=20), 0)
    assert not ok.diverged and ok.diverged_step is None


# ---------------------------------------------------------------- dropout


class DropMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.b(self.drop(self.a(x).relu()))


def _drop_model(seed=0):
    return build(DropMLP, seed=seed)


def test_dropout_training_is_seeded_and_ignores_global_rng(cls_data):
    cfg = TrainConfig(epochs=2, batch_size=16, optim=OptimConfig("sgd", lr=0.1))
    runs = []
    for global_seed, seed in ((0, 5), (99, 5), (0, 6)):
        torch.manual_seed(global_seed)
        m = _drop_model()
        train(m, cls_data, cfg, 0, seed=seed, dtype=F64)
        runs.append(m)
    assert_same_weights(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0].a.weight, runs[2].a.weight)
    # the population's recipe (dropout_masks + use_masks, outside the loop) gives the same run
    ref = replace_dropout(_drop_model()).to(F64)
    shapes = dropout_input_shapes(ref, cls_data.train.x[:16].to(F64))
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    x = cls_data.train.x.to(F64)
    for t, idx in enumerate(batch_indices(len(cls_data.train), 16, 2, 0), start=1):
        with use_masks(ref, dropout_masks(ref, 5, t, shapes, dtype=F64)):
            loss = F.cross_entropy(ref(x[idx]), cls_data.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_same_weights(runs[0], ref)


def test_dropout_inside_functional_call_is_refused(cls_data):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(6, 2, dropout=0.1, batch_first=True)
            self.out = nn.Linear(6, 3)

        def forward(self, x):
            h = x.unsqueeze(1)
            return self.out(self.mha(h, h, h)[0].squeeze(1))

    with pytest.raises(ConfigError, match="mha apply dropout with the global RNG"):
        train(Attn(), cls_data, TrainConfig(epochs=1, batch_size=16), 0)


# ---------------------------------------------------------------- probes


def test_probes_known_answers_in_the_loop(cls_data):
    cfg = TrainConfig(epochs=2, batch_size=16, optim=OptimConfig("sgd", lr=0.2, clip_norm=0.5))
    probes = [distance_from_init(4), grad_norm(4), relative_change(6), weight_norm(12)]
    model = mlp()
    init = take_snapshot(model)
    res = train(model, cls_data, cfg, 0, probes=probes, dtype=F64)
    steps = [r["step"] for r in res.probes]
    assert steps == [0, 4, 6, 8, 12]  # 12 steps; 12 divisible by all periods
    first, last = res.probes[0], res.probes[-1]
    assert first["distance_from_init"] == 0.0 and "grad_norm" not in first
    final = take_snapshot(model)
    dist = math.sqrt(sum(float((final[k] - init[k].to(F64)).square().sum()) for k in final))
    assert last["distance_from_init"] == pytest.approx(dist, rel=1e-12)
    w0 = init["layers.1.weight"].to(F64)
    rel = float((final["layers.1.weight"] - w0).norm() / w0.norm())
    assert last["relative_change/layers.1.weight"] == pytest.approx(rel, rel=1e-12)
    assert last["weight_norm/layers.0.weight"] == pytest.approx(
        float(final["layers.0.weight"].norm())
    )
    # grad_norm: the unclipped norm torch computes at those steps (clip_grad_norm_'s return)
    norms = []

    def record(m):
        norms.append(float(nn.utils.clip_grad_norm_(m.parameters(), 0.5)))

    reference(
        mlp(), cls_data, cfg, lambda m: torch.optim.SGD(m.parameters(), lr=0.2), on_grad=record
    )
    got = [r["grad_norm"] for r in res.probes if "grad_norm" in r]
    assert got == pytest.approx([norms[3], norms[7], norms[11]], rel=1e-10)
    json.dumps(res.probes)


def test_probes_do_not_change_training_with_batchnorm():
    full = _np(64 + 32, 20, seed=4)
    y = (full[:, :10].sum(1) > 0).astype(np.int64)
    data = TaskData(
        "bn", make_split(full[:64], y[:64]), make_split(full[64:], y[64:]),
        make_split(full[64:], y[64:]), 2,
    )  # fmt: skip
    cfg = TrainConfig(epochs=3, batch_size=16, optim=OptimConfig("adam", lr=0.01))

    def factory():
        return build(
            CNN1D, length=20, channels=(4,), kernel=3, num_classes=2, batchnorm=True, seed=0
        )

    def poke(model, ctx):
        model.train()  # even a probe that switches to train mode cannot move BN statistics
        model(ctx.data.train.x)
        return {"bn_mean": model.features[1].running_mean}

    plain, probed = factory(), factory()
    train(plain, data, cfg, 0)
    res = train(probed, data, cfg, 0, probes=[train_loss(2), Probe("poke", 3, poke)])
    assert_same_weights(plain, probed, rtol=0, atol=0)
    assert [r["step"] for r in res.probes] == [0, 2, 3, 4, 6, 8, 9, 10, 12]
    assert len(res.probes[2]["poke/bn_mean"]) == 4 and "train_loss" not in res.probes[2]


def test_masked_grad_norm_and_weights_stay_pruned(cls_data):
    model = mlp()
    mask = (torch.rand(8, 6, generator=generator(0)) < 0.5).float()
    apply_masks(model, {"layers.0.weight": mask})
    cfg = TrainConfig(epochs=1, batch_size=16, optim=OptimConfig("adamw", weight_decay=0.1))
    res = train(model, cls_data, cfg, 0, probes=[grad_norm(1)], dtype=F64)
    assert all(r["grad_norm"] > 0 for r in res.probes[1:])
    w = take_snapshot(model)["layers.0.weight"]
    assert torch.all(w[mask == 0] == 0)


# ---------------------------------------------------------------- dtype and bad input


def test_dtype_casts_model_and_data(cls_data):
    model = mlp()
    train(model, cls_data, TrainConfig(epochs=1, batch_size=16), 0, dtype=F64)
    assert all(p.dtype == F64 for p in model.parameters())
    assert cls_data.train.x.dtype == torch.float32  # the caller's data is not modified


def test_bad_input_one_line_before_training(cls_data):
    def fails(match, cfg=None, **kw):
        cfg = cfg or TrainConfig(epochs=1, batch_size=16)
        model = mlp()
        before = take_snapshot(model)
        with pytest.raises(ConfigError, match=match) as e:
            train(model, cls_data, cfg, 0, **kw)
        assert "\n" not in str(e.value)
        after = take_snapshot(model)
        assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained

    fails("snapshot step 7 is outside the run", snapshot_steps=(0, 7))
    fails("snapshot step -1 is outside the run", snapshot_steps=(-1,))
    fails("snapshot steps must be integers", snapshot_steps=(1.5,))
    fails("snapshot step 9 is outside", snapshot_steps=(np.int64(9),))
    long_warmup = OptimConfig(schedule=Schedule(warmup_steps=10))
    fails("warm-up of 10 steps is longer than the run", TrainConfig(1, 16, optim=long_warmup))
    nothing = OptimConfig(groups=(ParamGroup(("head.*",)),))
    fails(r"parameter group 0 \(globs 'head\.\*'\) matches no parameter; parameters are: layers",
          TrainConfig(1, 16, optim=nothing))  # fmt: skip
    fails("batch size 200 is larger", TrainConfig(1, 200))
    with pytest.raises(ConfigError, match="warmup_steps must be >= 0"):
        Schedule(warmup_steps=-1)
    with pytest.raises(ConfigError, match="step_size"):
        Schedule("step", step_size=-2)


def test_regression_task_rejects_cross_entropy_and_wrong_outputs(reg_data, cls_data):
    cfg = TrainConfig(epochs=1, batch_size=20, loss="cross_entropy")
    with pytest.raises(ConfigError, match="needs a classification task"):
        train(build(MLP, [5, 2], seed=0), reg_data, cfg, 0)
    with pytest.raises(ConfigError, match=r"outputs of shape \(3,\) per example, task 'teacher'"):
        train(build(MLP, [5, 3], seed=0), reg_data, TrainConfig(1, 20), 0)
    with pytest.raises(ConfigError, match=r"outputs of shape \(4,\) per example.*needs \(3,\)"):
        train(mlp(widths=(6, 4)), cls_data, TrainConfig(1, 16), 0)


def test_train_members_loop_passes_seed_and_member_optim(cls_data):
    from weightlab.models import model_factory
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members

    factory = model_factory(DropMLP)
    cfg = TrainConfig(epochs=1, batch_size=16, loss="mse")
    specs = [MemberSpec(seed=1, optim=OptimConfig("sgd", lr=0.1)), MemberSpec(seed=2)]
    results, finals = train_members(factory, specs, cls_data, cfg, engine="loop")
    solo = build(DropMLP, seed=1)
    member_cfg = TrainConfig(epochs=1, batch_size=16, loss="mse", optim=OptimConfig("sgd", lr=0.1))
    want = train(solo, cls_data, member_cfg, 0, seed=1)
    assert results[0].final == want.final
    assert torch.equal(finals[0]["a.weight"], solo.a.weight.detach())


def test_split_helper_types():
    s = Split(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    assert len(s) == 2


def test_probe_may_use_autograd_without_changing_training(cls_data):
    cfg = TrainConfig(epochs=1, batch_size=16, optim=OptimConfig("sgd", lr=0.1, momentum=0.9))

    def full_grad(model, ctx):
        with torch.enable_grad():
            loss = ctx.loss_fn(model(ctx.data.train.x), ctx.data.train.y).mean()
            loss.backward()  # leaves .grad behind on purpose
        return sum(float(p.grad.square().sum()) for p in model.parameters()) ** 0.5

    plain, probed = mlp(), mlp()
    train(plain, cls_data, cfg, 0, dtype=F64)
    res = train(probed, cls_data, cfg, 0, probes=[Probe("full_grad", 2, full_grad)], dtype=F64)
    assert_same_weights(plain, probed, rtol=0, atol=0)
    assert all(r["full_grad"] > 0 for r in res.probes)


def test_cast_data_keeps_integer_inputs():
    """Token ids (integer inputs, e.g. for nn.Embedding) are not cast to the float dtype."""
    from weightlab.train.loop import cast_data

    ids = torch.tensor([[1, 2], [3, 0]])
    split = Split(ids, torch.tensor([0, 1]))
    data = TaskData("tokens", split, split, split, 2)
    out = cast_data(data, torch.float64)
    assert out.train.x.dtype == torch.long and torch.equal(out.train.x, ids)
    floats = cast_data(TaskData("f", Split(ids.float(), split.y), split, split, 2), torch.float64)
    assert floats.train.x.dtype == torch.float64


def test_train_result_record_is_json_and_carries_probes():
    """TrainResult.to_dict() is what recipes store in unit metrics (metrics.jsonl): history,
    probe rows, divergence and the early-stopping step, all JSON-able."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    split = make_regression_split(x.numpy(), (x @ torch.ones(3, 1)).numpy())
    data = TaskData("lin", split, split, split, 0, kind="regression")
    res = train(
        build(MLP, [3, 8, 1], seed=0),
        data,
        TrainConfig(epochs=2, batch_size=16, optim=OptimConfig("sgd", lr=0.05)),
        0,
        probes=[distance_from_init(every=4)],
    )
    rec = json.loads(json.dumps(res.to_dict()))
    assert [p["step"] for p in rec["probes"]] == [0, 4, 8]
    assert rec["probes"][0]["distance_from_init"] == 0.0
    assert rec["history"][-1]["step"] == 8 and "test_r2" in rec["history"][-1]
    assert rec["diverged"] is False and rec["diverged_step"] is None
    assert rec["early_stop_step"] == res.early_stop_step in (4, 8) and rec["last_step"] == 8
    assert rec["history"] == [p.to_dict() for p in res.history] and rec["probes"] == res.probes
