"""Training-time pruners and schedules, run through weightlab.train.train's step callbacks."""

from __future__ import annotations

import pytest
import torch

from weightlab.core import apply_masks, get_masks
from weightlab.core.selectors import plain_name
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.sparsity.allocation import round_half_up
from weightlab.sparsity.pruners import (
    Pruner,
    STEMask,
    apply_ste_masks,
    batch_gradients,
    get_ste_masks,
    make_pruner,
)
from weightlab.sparsity.schedules import (
    OneShotSchedule,
    PeriodicSchedule,
    PolynomialSchedule,
    StaticSchedule,
    density_of,
    make_schedule,
)
from weightlab.train import OptimConfig, TrainConfig, train
from weightlab.train.losses import resolve_loss

NAMES = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", "cpu")


def _cfg(epochs=4, optim="adam", lr=0.01):
    return TrainConfig(epochs=epochs, batch_size=30, optim=OptimConfig(optim, lr=lr))


def _model(seed=0):
    return build(MLP, [4, 16, 16, 3], seed=seed)


def _recorder(get):
    seen = []

    def cb(model, ctx):
        seen.append((ctx.step, {k: v.clone() for k, v in get(model).items()}))

    return seen, cb


# -- schedules -------------------------------------------------------------------------


def test_polynomial_schedule_matches_zhu_gupta_eq1():
    sched = PolynomialSchedule(final_sparsity=0.8, start=10, every=5, updates=4)
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3, nΔt = 20
    expected = {10: 0.0, 15: 0.8 - 0.8 * 0.75**3, 20: 0.8 - 0.8 * 0.5**3, 25: 0.8 - 0.8 / 64}
    for t, s in expected.items():
        assert sched.sparsity_at(t) == pytest.approx(s, abs=1e-15)
    assert sched.sparsity_at(30) == 0.8  # exactly s_f at t0 + nΔt
    assert [sched.sparsity_at(t) for t in (0, 9, 12, 31, 35)] == [None] * 5
    assert sched.value(100) == pytest.approx(0.8) and sched.value(0) == 0.0
    with_init = PolynomialSchedule(0.9, start=0, every=1, updates=2, initial_sparsity=0.5)
    assert with_init.sparsity_at(1) == pytest.approx(0.9 - 0.4 * 0.125)


def test_static_one_shot_periodic_schedules():
    assert [StaticSchedule(0.5).sparsity_at(t) for t in (0, 1)] == [0.5, None]
    assert [OneShotSchedule(0.5, 3).sparsity_at(t) for t in (2, 3, 4)] == [None, 0.5, None]
    per = PeriodicSchedule(0.7, every=4, start=2, end=10)
    assert [t for t in range(20) if per.sparsity_at(t) is not None] == [2, 6, 10]
    assert make_schedule("one_shot", sparsity=0.5, step=2) == OneShotSchedule(0.5, 2)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: make_schedule("cosine", sparsity=0.5), "unknown pruning schedule"),
        (lambda: make_schedule("static", density=0.5), "bad arguments"),
        (lambda: StaticSchedule(1.0), r"must be in \[0, 1\)"),
        (lambda: PolynomialSchedule(0.5, 0, 1, 3, initial_sparsity=0.6), "exceeds the final"),
        (lambda: PeriodicSchedule(0.5, every=0), ">= 1"),
        (lambda: OneShotSchedule(0.5, 10).check(8), "only 8 updates"),
    ],
)
def test_schedule_bad_input(build, match):
    with pytest.raises(ConfigError, match=match) as err:
        build()
    assert "\n" not in str(err.value)


# -- plain pruners in train() ----------------------------------------------------------


def test_gradual_magnitude_pruning_reaches_target_and_pruned_stay_zero(iris):
    model = _model()
    sched = PolynomialSchedule(final_sparsity=0.8, start=2, every=2, updates=5)
    pruner = Pruner(sched)
    seen = []

    def record(m, ctx):
        stored = {plain_name(n): p.detach().clone() for n, p in m.named_parameters()}
        seen.append((ctx.step, (get_masks(m), stored)))

    train(model, iris, _cfg(), data_seed=0, callbacks=[pruner, record])
    final = get_masks(model)
    for name in NAMES:
        w = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert int(final[name].sum()) == round_half_up(0.2, w.numel())
        stored = model.get_submodule(name.rsplit(".", 1)[0]).parametrizations.weight.original
        assert torch.all(stored[~final[name]] == 0)
    assert [e["step"] for e in pruner.log] == [2, 4, 6, 8, 10, 12]
    assert pruner.log[-1]["sparsity"] == 0.8
    # after every step the stored weights are zero wherever the mask is 0; masks are nested
    prev = None
    for step, (masks, stored) in seen:
        for n in masks:
            assert torch.all(stored[n][~masks[n]] == 0), (step, n)
        if masks and prev:
            assert all(torch.all(masks[n] <= prev[n]) for n in masks), step
        prev = masks or prev
    expected = [sched.value(t) for t in (2, 4, 6, 8, 10, 12)]
    assert [e["sparsity"] for e in pruner.log] == pytest.approx(expected, abs=1e-15)
    for entry in pruner.log:  # realized density: exact per-layer counts of the target
        kept = sum(round_half_up(density_of(entry["sparsity"]), m.numel()) for m in final.values())
        assert entry["density"] == kept / sum(m.numel() for m in final.values())


def test_gradual_from_step_zero_needs_no_prepare(iris):
    model = _model()
    pruner = Pruner(PolynomialSchedule(final_sparsity=0.5, start=0, every=3, updates=3))
    train(model, iris, _cfg(epochs=3), data_seed=0, callbacks=[pruner])
    assert [e["step"] for e in pruner.log] == [3, 6, 9]
    assert all(int(m.sum()) == m.numel() // 2 for m in get_masks(model).values())


def test_global_allocation_keeps_the_exact_total(iris):
    model = _model()
    pruner = make_pruner("magnitude", OneShotSchedule(0.75, 4), allocation="global")
    train(model, iris, _cfg(epochs=2), data_seed=0, callbacks=[pruner])
    masks = get_masks(model)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round_half_up(0.25, total)


def test_one_shot_mid_training_zeroes_adam_state_and_keeps_training(iris):
    model = _model()
    pruner = Pruner(OneShotSchedule(0.5, 3))
    states = []

    def after(model, ctx):
        if ctx.step in (3, 8):
            p = model.layers[1].parametrizations.weight.original
            st = ctx.optimizer.state[p]
            states.append((p.detach().clone(), st["exp_avg"].clone(), st["exp_avg_sq"].clone()))

    train(model, iris, _cfg(epochs=3), data_seed=0, callbacks=[pruner, after])
    mask = get_masks(model)["layers.1.weight"]
    (w3, m3, v3), (w8, m8, v8) = states
    for t in (w3, m3, v3, w8, m8, v8):
        assert torch.all(t[~mask] == 0)
    # the optimizer still updates the surviving weights (dead ReLU units get no gradient)
    assert (w8 != w3)[mask].float().mean() > 0.5


def test_channel_pruner_removes_whole_rows_and_static_needs_prepare(iris):
    model = _model()
    pruner = Pruner(StaticSchedule(0.5), granularity="channel")
    with pytest.raises(ConfigError, match="prepare"):
        train(_model(), iris, _cfg(epochs=1), data_seed=0, callbacks=[pruner])
    pruner = Pruner(StaticSchedule(0.5), granularity="channel")
    pruner.prepare(model)
    train(model, iris, _cfg(epochs=1), data_seed=0, callbacks=[pruner])
    for mask in get_masks(model).values():
        rows = mask.all(dim=1) | ~mask.any(dim=1)
        assert rows.all() and int(mask.any(dim=1).sum()) == round_half_up(0.5, mask.shape[0])


def test_nm_pruner_gives_two_of_four(iris):
    model = MLP([4, 16, 8, 3])
    pruner = Pruner(OneShotSchedule(0.5, 2), granularity="nm")
    train(model, iris, _cfg(epochs=1), data_seed=0, callbacks=[pruner])
    for mask in get_masks(model).values():
        assert torch.all(mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2)


def test_saliency_scores_are_weight_times_dense_gradient(iris):
    model = _model()
    x, y = iris.train.x[:30], iris.train.y[:30]
    loss_fn = resolve_loss("cross_entropy", "classification", 1)
    apply_masks(model, {"layers.1.weight": torch.rand(16, 16) > 0.5})
    grads = batch_gradients(model, NAMES, x, y, loss_fn)
    ref = _model()  # same init, no mask object: the dense gradient at W ⊙ M by hand
    with torch.no_grad():
        ref.layers[1].weight.copy_(model.layers[1].weight)
    loss_fn(ref(x), y).mean().backward()
    for i, name in enumerate(NAMES):
        assert torch.allclose(grads[name], ref.layers[i].weight.grad, atol=1e-6)
    assert model.layers[1].parametrizations.weight.original.grad is None  # .grad untouched
    # the pruner keeps the top |w·g| per layer
    pruner = Pruner(OneShotSchedule(0.5, 1), score="saliency")

    class Ctx:
        step, total, seed = 1, 10, 0

    Ctx.x, Ctx.y, Ctx.loss_fn, Ctx.optimizer = x, y, loss_fn, None
    masks = pruner.update(model, 0.5, step=1, ctx=Ctx)
    w0 = model.layers[0].weight.detach()
    sal = (w0.double() * grads["layers.0.weight"].double()).abs().reshape(-1)
    top = torch.argsort(-sal, stable=True)[: round_half_up(0.5, sal.numel())]
    assert torch.equal(
        torch.nonzero(masks["layers.0.weight"].reshape(-1)).reshape(-1), top.sort()[0]
    )


def test_random_pruner_is_deterministic_per_seed(iris):
    def run(seed):
        model = _model()
        pruner = make_pruner("random", PeriodicSchedule(0.6, every=3, start=3), seed=seed)
        train(model, iris, _cfg(epochs=2), data_seed=0, callbacks=[pruner])
        return get_masks(model)

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


# -- straight-through pruning ----------------------------------------------------------


def test_ste_mask_passes_the_gradient_through():
    model = MLP([3, 2])
    apply_ste_masks(model, {"layers.0.weight": torch.tensor([[1, 0, 1], [0, 1, 1]])})
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = model(x)
    stored = model.layers[0].parametrizations.weight.original
    expected = (x @ (stored * torch.tensor([[1.0, 0, 1], [0, 1, 1]])).T) + model.layers[0].bias
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert torch.equal(stored.grad, x.expand(2, 3))  # dense: pruned positions included
    assert not torch.all(stored == 0)  # the stored weights are not zeroed
    assert isinstance(model.layers[0].parametrizations.weight[0], STEMask)


def test_ste_magnitude_pruned_weights_train_and_come_back(iris):
    model = _model()
    pruner = make_pruner("ste_magnitude", PeriodicSchedule(0.5, every=1, start=1))
    seen, record = _recorder(get_ste_masks)
    stored0 = model.layers[1].weight.detach().clone()
    train(model, iris, _cfg(epochs=4, optim="sgd", lr=0.5), data_seed=0, callbacks=[pruner, record])
    assert get_masks(model) == {}  # no plain Mask: dense weights
    masks = [m["layers.1.weight"] for _, m in seen]
    first = masks[0]
    stored = model.layers[1].parametrizations.weight.original.detach()
    assert torch.any((stored != stored0)[~first])  # pruned weights received gradient
    came_back = torch.zeros_like(first)
    for before, after in zip(masks, masks[1:], strict=False):
        came_back |= ~before & after
    assert came_back.any()  # and some were kept again later
    assert all(int(m.sum()) == m.numel() // 2 for m in masks)
    eff = model.layers[1].weight.detach()
    assert torch.all(eff[~masks[-1]] == 0)


def test_ste_random_redraws_masks(iris):
    model = _model()
    pruner = make_pruner("ste_random", PeriodicSchedule(0.5, every=5, start=5), seed=3)
    seen, record = _recorder(get_ste_masks)
    train(model, iris, _cfg(epochs=4), data_seed=0, callbacks=[pruner, record])
    updates = [m for t, m in seen if t % 5 == 0]
    assert not torch.equal(updates[0]["layers.0.weight"], updates[1]["layers.0.weight"])


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: make_pruner("snip", StaticSchedule(0.5)), "unknown pruner"),
        (lambda: Pruner(StaticSchedule(0.5), score="taylor"), "unknown pruning score"),
        (lambda: Pruner(StaticSchedule(0.5), allocation="uniform"), "unknown allocation"),
        (lambda: Pruner(StaticSchedule(0.5), granularity="row"), "unknown granularity"),
        (
            lambda: Pruner(StaticSchedule(0.5), granularity="block", allocation="global"),
            "global allocation",
        ),
        (
            lambda: Pruner(PolynomialSchedule(0.5, 0, 1, 2), granularity="nm"),
            "not a gradual one",
        ),
        (lambda: Pruner(0.5), "needs a Schedule"),
        (lambda: Pruner(OneShotSchedule(0.75, 1), granularity="nm"), "asks for 0.75"),
        (lambda: Pruner(StaticSchedule(0.5), score="saliency").prepare(_model()), "batch"),
    ],
)
def test_pruner_bad_input(build, match):
    with pytest.raises(ConfigError, match=match) as err:
        build()
    assert "\n" not in str(err.value)


def test_plain_and_straight_through_masks_do_not_mix():
    model = _model()
    apply_ste_masks(model, {"layers.0.weight": torch.ones(16, 4)})
    with pytest.raises(ConfigError, match="straight-through mask"):
        Pruner(OneShotSchedule(0.5, 1)).update(model, 0.5, step=1)
    masked = _model()
    apply_masks(masked, {"layers.0.weight": torch.ones(16, 4)})
    with pytest.raises(ConfigError, match="plain Mask"):
        make_pruner("ste_magnitude", OneShotSchedule(0.5, 1)).update(masked, 0.5, step=1)


def test_schedule_past_the_run_and_mismatched_masks_are_refused(iris):
    pruner = Pruner(OneShotSchedule(0.5, 1000))
    with pytest.raises(ConfigError, match="only 9 updates"):
        train(_model(), iris, _cfg(epochs=3), data_seed=0, callbacks=[pruner])
    with pytest.raises(ConfigError, match="build masks from this model"):
        apply_masks(_model(), {"layers.0.weight": torch.ones(4, 16)})
