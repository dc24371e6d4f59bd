"""The population engine equals single-model training, member by member."""

from __future__ import annotations

import math

import pytest
import torch
from population_helpers import assert_result_close, assert_state_close, random_mask, solo

from weightlab.core import get_masks, take_snapshot
from weightlab.data import TaskData
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, model_factory
from weightlab.population import MemberSpec, Population, build_member
from weightlab.train import OptimConfig, TrainConfig, evaluate, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(mnist1d_slice) -> TaskData:
    return mnist1d_slice


CFG = TrainConfig(epochs=10, batch_size=32, eval_every=50)  # 100 steps


def reference(factory, spec: MemberSpec, data, cfg, pop_seed=0, snapshot_steps=()):
    model = build_member(factory, spec)
    if spec.optim is not None:
        cfg = TrainConfig(cfg.epochs, cfg.batch_size, cfg.eval_every, spec.optim)
    ds = spec.data_seed if spec.data_seed is not None else pop_seed
    result = train(model, data, cfg, data_seed=ds, snapshot_steps=snapshot_steps)
    return model, result


def assert_history_close(got, want) -> None:
    assert [p.step for p in got.history] == [p.step for p in want.history]
    for a, b in zip(got.history, want.history, strict=True):
        assert a.epoch == b.epoch
        for f in ("train_loss", "val_loss", "test_loss"):
            assert math.isclose(getattr(a, f), getattr(b, f), rel_tol=1e-4), f
        for f in ("val_acc", "test_acc"):
            assert abs(getattr(a, f) - getattr(b, f)) <= 0.021, f


def check_equivalence(factory, specs, data, cfg=CFG, pop_seed=0, **kw):
    pop = Population(factory, specs, data_seed=pop_seed, **kw)
    results = pop.fit(data, cfg)
    for i, spec in enumerate(specs):
        model, ref = reference(factory, spec, data, cfg, pop_seed)
        assert_state_close(pop.state(i), take_snapshot(model))
        assert_history_close(results[i], ref)
        for name, mask in (spec.masks or {}).items():
            assert torch.all(pop.state(i)[name][mask == 0] == 0), name
    return pop, results


MLP_F = model_factory(MLP, [40, 64, 32, 10])


def test_mlp_adam_mixed_members(data):
    specs = [
        MemberSpec(seed=0),
        MemberSpec(seed=1, optim=OptimConfig("adam", lr=3e-3, weight_decay=1e-3)),
        MemberSpec(seed=2, data_seed=7),
        MemberSpec(seed=3, masks={"layers.0.weight": random_mask((64, 40), 5)}),
    ]
    check_equivalence(MLP_F, specs, data, pop_seed=3)


def test_mlp_sgd_momentum_masks_shared_order(data):
    cfg = TrainConfig(10, 32, 50, OptimConfig("sgd", lr=0.05, momentum=0.9, weight_decay=1e-4))
    masks = {
        "layers.0.weight": random_mask((64, 40), 1),
        "layers.1.weight": random_mask((32, 64), 2),
    }
    specs = [MemberSpec(seed=0, masks=masks), MemberSpec(seed=4), MemberSpec(seed=5, masks=masks)]
    check_equivalence(MLP_F, specs, data, cfg)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_mlp_other_activations(data, activation):
    f = model_factory(MLP, [40, 32, 10], activation=activation)
    check_equivalence(f, [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=2)], data)


CNN_F = model_factory(CNN1D, channels=(8, 8))


def test_cnn_adam_masks_and_orders(data):
    mask = {"features.2.weight": random_mask((8, 8, 5), 3)}
    specs = [
        MemberSpec(seed=0, masks=mask),
        MemberSpec(seed=1, data_seed=5, optim=OptimConfig("adam", lr=2e-3)),
    ]
    check_equivalence(CNN_F, specs, data)


def test_cnn_batchnorm_sgd_running_stats(data):
    f = model_factory(CNN1D, channels=(8, 8), batchnorm=True)
    cfg = TrainConfig(10, 32, 50, OptimConfig("sgd", lr=0.05, momentum=0.9))
    specs = [
        MemberSpec(seed=0),
        MemberSpec(seed=1, masks={"features.0.weight": random_mask((8, 1, 5), 4)}),
    ]
    pop, _ = check_equivalence(f, specs, data, cfg)
    assert "features.1.running_mean" in pop.state(0)
    assert int(pop.state(1)["features.1.num_batches_tracked"]) == 100


def test_snapshots_and_init_state_rewind(data):
    base = MLP_F(9)
    theta0 = take_snapshot(base)
    mask = {"layers.1.weight": random_mask((32, 64), 8, 0.2)}
    specs = [MemberSpec(seed=123, init_state=theta0, masks=mask), MemberSpec(seed=1)]
    pop = Population(MLP_F, specs)
    results = pop.fit(data, CFG, snapshot_steps=(0, 30))
    model, ref = reference(MLP_F, specs[0], data, CFG, snapshot_steps=(0, 30))
    assert sorted(results[0].snapshots) == [0, 30]
    for step in (0, 30):
        assert_state_close(results[0].snapshots[step], ref.snapshots[step])
    assert torch.all(results[0].snapshots[0]["layers.1.weight"][mask["layers.1.weight"] == 0] == 0)
    assert_state_close(pop.state(0), take_snapshot(model))


def test_divergent_member_does_not_stop_others(data):
    cfg = TrainConfig(2, 32, 0, OptimConfig("sgd", lr=0.05))
    specs = [MemberSpec(seed=0), MemberSpec(seed=1, optim=OptimConfig("sgd", lr=1e9))]
    pop = Population(MLP_F, specs)
    results = pop.fit(data, cfg)
    assert results[1].diverged and not results[0].diverged
    # one policy with the loop: flagged at an evaluation, which is the member's last point
    assert results[1].diverged_step == results[1].history[-1].step == 10
    assert results[0].history[-1].step == 20
    _, bad = reference(MLP_F, specs[1], data, cfg)
    assert (bad.diverged, bad.diverged_step) == (True, 10)
    model, ref = reference(MLP_F, specs[0], data, cfg)
    assert_state_close(pop.state(0), take_snapshot(model))


def test_member_round_trip_and_evaluate(data):
    masks = {"features.0.weight": random_mask((8, 1, 5), 2)}
    f = model_factory(CNN1D, channels=(8, 8), batchnorm=True)
    pop = Population(f, [MemberSpec(seed=0, masks=masks), MemberSpec(seed=1)])
    pop.fit(data, TrainConfig(1, 32))
    losses, accs = pop.evaluate(data.test)
    assert losses.shape == accs.shape == (2,)
    for i in range(2):
        m = pop.member(i)
        loss, acc = evaluate(m, data.test)
        assert math.isclose(float(losses[i]), loss, rel_tol=1e-5)
        assert math.isclose(float(accs[i]), acc, abs_tol=1e-6)
        assert_state_close(take_snapshot(m), pop.state(i))
    assert set(get_masks(pop.member(0))) == {"features.0.weight"}
    assert torch.equal(
        get_masks(pop.member(0))["features.0.weight"], masks["features.0.weight"].bool()
    )
    assert get_masks(pop.member(1)) == {}


def test_save_load_round_trip(data, tmp_path):
    cfg_b = OptimConfig("sgd", lr=0.1, momentum=0.5)
    specs = [
        MemberSpec(seed=0, masks={"layers.0.weight": random_mask((64, 40), 3)}),
        MemberSpec(seed=1, data_seed=4, optim=cfg_b),
    ]
    pop = Population(MLP_F, specs, data_seed=2)
    pop.fit(data, TrainConfig(1, 32))
    pop.save(tmp_path / "pop")
    assert sorted(p.name for p in (tmp_path / "pop").iterdir()) == [
        "manifest.json",
        "weights.safetensors",
    ]
    back = Population.load(tmp_path / "pop", MLP_F)
    assert back.data_seed == 2 and len(back) == 2
    assert back.specs[1].optim == cfg_b and back.specs[1].data_seed == 4
    for i in range(2):
        for k, v in pop.state(i).items():
            assert torch.equal(back.state(i)[k], v)
    assert torch.equal(back.specs[0].masks["layers.0.weight"], specs[0].masks["layers.0.weight"])
    a, b = pop.evaluate(data.val), back.evaluate(data.val)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("factory", [MLP_F, CNN_F], ids=["mlp", "cnn"])
def test_chunking_matches_and_runs_are_bitwise_reproducible(data, factory):
    specs = [MemberSpec(seed=s, data_seed=s % 2) for s in range(5)]
    cfg = TrainConfig(3, 32, 0)
    whole = Population(factory, specs)
    tiny = Population(factory, specs, memory_budget_mib=0.05)
    assert len(whole._chunks(32)) == 1 and len(tiny._chunks(32)) > 1
    rw, rt = whole.fit(data, cfg), tiny.fit(data, cfg)
    for i in range(len(specs)):
        assert_state_close(tiny.state(i), whole.state(i))
        assert_history_close(rt[i], rw[i])
    again = Population(factory, specs, memory_budget_mib=0.05)
    again.fit(data, cfg)
    for i in range(len(specs)):
        for k, v in tiny.state(i).items():
            assert torch.equal(again.state(i)[k], v)


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="at least one"):
        Population(MLP_F, [])
    with pytest.raises(ConfigError, match="shape"):
        Population(MLP_F, [MemberSpec(masks={"layers.0.weight": torch.ones(3, 3)})])
    with pytest.raises(ConfigError, match="unknown parameter"):
        Population(MLP_F, [MemberSpec(masks={"layers.9.weight": torch.ones(3, 3)})])
    with pytest.raises(ConfigError, match="0 and 1"):
        Population(MLP_F, [MemberSpec(masks={"layers.0.weight": torch.full((64, 40), 0.5)})])
    with pytest.raises(ConfigError, match="unknown optimizer"):
        Population(MLP_F, [MemberSpec(optim=OptimConfig(name="lion"))])
    with pytest.raises(ConfigError, match="snapshot"):
        Population(MLP_F, [MemberSpec(init_state={"layers.0.weight": torch.zeros(64, 40)})])
    with pytest.raises(ConfigError, match="architecture"):
        Population(lambda s: MLP([40, 8 + s, 10]), [MemberSpec(seed=0), MemberSpec(seed=1)])


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_unfused_optimizer_fallback_matches_single_model_loop(data, monkeypatch, opt_name):
    """Where torch lacks the fused CPU kernels (torch < 2.4), the reference arithmetic runs."""
    from weightlab.population import optim as popt

    monkeypatch.setitem(popt._FUSED, "cpu", False)
    optim = OptimConfig("adam", lr=2e-3, weight_decay=1e-3)
    if opt_name == "sgd":
        optim = OptimConfig("sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
    specs = [
        MemberSpec(seed=0, optim=optim),
        MemberSpec(seed=1, optim=optim, masks={"layers.0.weight": random_mask((64, 40), 3)}),
        MemberSpec(seed=2, optim=OptimConfig(opt_name, lr=1e-3)),
    ]
    check_equivalence(MLP_F, specs, data)
    assert popt.fused_available(torch.device("cpu")) is False


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_empty_validation_split_gives_nan_metrics_in_loop_and_population(data, kind):
    """A task without validation examples trains; its val metrics are NaN (null in run files),
    the test metrics real, and the population still equals the loop."""
    from weightlab.data import Split
    from weightlab.runs.files import dumps_json

    x = data.train.x.double()
    if kind == "classification":
        y, out, factory = data.train.y, 10, model_factory(MLP, [40, 16, 10])
    else:
        y, out, factory = x[:, :3].sum(1, keepdim=True), 1, model_factory(MLP, [40, 16, 1])
    empty = Split(x[:0], y[:0])
    classes = out if kind == "classification" else 0
    task = TaskData("no-val", Split(x, y), empty, Split(x[:50], y[:50]), classes, kind)
    cfg = TrainConfig(epochs=2, batch_size=32, eval_every=5)
    spec = MemberSpec(seed=3)
    got = Population(factory, [spec], data_seed=0, dtype=torch.float64).fit(task, cfg)[0]
    model, want = solo(factory, spec, task, cfg)
    assert_result_close(got, want)
    point = got.history[-1]
    assert math.isnan(point.val_loss) and math.isfinite(point.test_loss)
    assert '"val_loss": null' in dumps_json(point.to_dict())
    assert got.best is got.final and want.best is want.final  # nothing to stop early on


def test_accuracy_record_reads_the_early_stop_and_final_evaluations(data):
    from weightlab.recipes.members import accuracy_record

    model = build_member(MLP_F, MemberSpec(seed=1))
    r = train(model, data, TrainConfig(epochs=3, batch_size=32, eval_every=10), data_seed=0)
    rec = accuracy_record(r)
    assert rec == {
        "diverged": False,
        "test_acc": r.best.test_acc,
        "final_test_acc": r.history[-1].test_acc,
        "early_stop_step": min(r.history, key=lambda p: (p.val_loss, p.step)).step,
        "last_step": r.history[-1].step,
    }
