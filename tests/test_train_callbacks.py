"""Step callbacks: called after every update with the step's batch; may change weights."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP
from weightlab.population.spec import MemberSpec
from weightlab.recipes.members import train_members
from weightlab.train import OptimConfig, StepContext, TrainConfig, train


def _setup():
    data = load_dataset("iris", "cpu")
    cfg = TrainConfig(epochs=2, batch_size=30, optim=OptimConfig("sgd", lr=0.1))
    return data, cfg


def test_callback_sees_every_step_and_its_batch():
    data, cfg = _setup()
    seen: list[tuple[int, int, int]] = []

    def record(model, ctx: StepContext):
        assert model.training and torch.is_grad_enabled()
        assert ctx.loss_fn(model(ctx.x), ctx.y).shape == (len(ctx.x),)
        seen.append((ctx.step, ctx.total, len(ctx.x)))

    model = MLP([4, 8, 3])
    train(model, data, cfg, data_seed=0, callbacks=[record])
    total = 2 * (len(data.train) // 30)
    assert seen == [(t, total, 30) for t in range(1, total + 1)]


def test_callback_changes_persist_into_training():
    data, cfg = _setup()

    def zero_first_row(model, ctx):  # a projection applied after every update
        with torch.no_grad():
            model.layers[0].weight[0].zero_()

    model = MLP([4, 8, 3])
    train(model, data, cfg, data_seed=0, callbacks=[zero_first_row])
    assert torch.all(model.layers[0].weight[0] == 0)
    assert torch.any(model.layers[0].weight[1] != 0)


def test_train_members_callbacks_need_the_loop_engine():
    data, cfg = _setup()
    specs = [MemberSpec(seed=s) for s in range(2)]
    calls: list[int] = []

    def make(i):
        return [lambda model, ctx, i=i: calls.append(i) if ctx.step == 1 else None]

    train_members(lambda s: MLP([4, 8, 3]), specs, data, cfg, engine="loop", callbacks=make)
    assert calls == [0, 1]
    with pytest.raises(ConfigError, match="loop engine"):
        train_members(lambda s: MLP([4, 8, 3]), specs, data, cfg, callbacks=make)


def test_loss_recorder_keeps_each_steps_pre_update_batch_loss():
    from weightlab.train import LossRecorder

    data, cfg = _setup()
    rec = LossRecorder()
    want: list[float] = []
    model = MLP([4, 8, 3])

    def before(model, ctx):  # recompute the step's loss from a copy of the pre-update weights
        want.append(float(ctx.loss_fn(ref(ctx.x), ctx.y).mean()))
        ref.load_state_dict(model.state_dict())

    ref = MLP([4, 8, 3])
    ref.load_state_dict(model.state_dict())
    res = train(model, data, cfg, data_seed=0, callbacks=[before, rec])
    assert len(rec.losses) == 2 * (len(data.train) // 30)
    assert rec.losses == pytest.approx(want, rel=1e-6)
    per_epoch = len(rec.losses) // 2
    assert sum(rec.losses[:per_epoch]) / per_epoch == pytest.approx(
        res.history[0].train_loss, rel=1e-6
    )
