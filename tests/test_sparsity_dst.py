"""Dynamic sparse training (SET, RigL) as step callbacks: exact counts, zero-initialized
regrowth with reset optimizer state, RigL's gradient growth on a hand-computed case."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks, get_masks
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.population.spec import MemberSpec
from weightlab.recipes.members import train_members
from weightlab.sparsity.allocation import erk_densities, keep_counts, round_half_up
from weightlab.sparsity.dst import SET, RigL, drop_fraction, make_dst
from weightlab.train import OptimConfig, TrainConfig, train


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", "cpu")


def _cfg(epochs=6, optim="adam", lr=0.02):
    momentum = 0.9 if optim == "sgd" else 0.0
    return TrainConfig(
        epochs=epochs, batch_size=30, optim=OptimConfig(optim, lr=lr, momentum=momentum)
    )


def _stored(model, i):
    return model.layers[i].parametrizations.weight.original


def _run(iris, method, seed=0, optim="adam", epochs=6):
    """Train with ``method`` and record, after every update step, the masks and the
    stored weights and optimizer state of every layer."""
    model = build(MLP, [4, 32, 32, 3], seed=0)
    method.prepare(model, seed=seed)
    seen = []

    def record(model, ctx):
        if ctx.step % method.every == 0:
            layers = []
            for i in range(3):
                p = _stored(model, i)
                state = {
                    k: v.clone()
                    for k, v in ctx.optimizer.state[p].items()
                    if isinstance(v, torch.Tensor) and v.dim()
                }
                layers.append((p.detach().clone(), state))
            seen.append((ctx.step, get_masks(model), layers))

    train(model, iris, _cfg(epochs, optim), data_seed=0, seed=seed, callbacks=[method, record])
    return model, seen


@pytest.mark.parametrize("cls", [SET, RigL])
def test_density_constant_and_regrown_weights_start_at_zero(iris, cls):
    method = cls(0.2, every=2, fraction=0.3)
    model = build(MLP, [4, 32, 32, 3], seed=0)
    init = method.initial_masks(model)
    _, seen = _run(iris, method)
    counts = {n: int(m.sum()) for n, m in init.items()}
    shapes = {n: m.shape for n, m in init.items()}
    assert counts == keep_counts(shapes, erk_densities(shapes, 0.2))
    updates = [e["step"] for e in method.log]
    end = round_half_up(method.end_fraction, 18)
    assert updates == [t for t in range(2, end) if t % 2 == 0]
    prev = init
    regrown = 0
    for step, masks, layers in seen:
        assert {n: int(m.sum()) for n, m in masks.items()} == counts, step  # every layer
        for i, name in enumerate(sorted(masks)):
            new = masks[name] & ~prev[name]
            weight, state = layers[i]
            assert torch.all(weight[~masks[name]] == 0)
            if step in updates:
                assert torch.all(weight[new] == 0)
                assert state and all(torch.all(v[new] == 0) for v in state.values())
                regrown += int(new.sum())
        prev = masks
    assert regrown > 0
    assert all(sum(e["new"].values()) <= sum(e["dropped"].values()) for e in method.log)
    for e in method.log:  # exact counts: k = round-half-up(f(t) · a) per layer
        assert e["fraction"] == drop_fraction(0.3, e["step"], end, method.decay)
        assert e["dropped"] == {n: round_half_up(e["fraction"], a) for n, a in counts.items()}


def test_regrown_weights_train_after_the_update(iris):
    method = RigL(0.2, every=3, fraction=0.3)
    _, seen = _run(iris, method)
    (_, m0, l0), (_, _, l1) = seen[0], seen[1]  # update at step 3, next record at step 6
    prev_masks = method.initial_masks(build(MLP, [4, 32, 32, 3], seed=0))
    name = "layers.1.weight"
    new = m0[name] & ~prev_masks[name]
    assert new.any()
    assert torch.all(l0[1][0][new] == 0)
    assert torch.any(l1[1][0][new & seen[1][1][name]] != 0)


def test_rigl_grows_the_top_dense_gradient_on_a_hand_computed_case():
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.1, 0.7], [0.3, 2.0, 0.0]]))
    apply_masks(model, {"0.weight": torch.tensor([[1, 1, 0], [0, 1, 0]])})
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 2)
    loss_fn = lambda pred, target: ((pred - target) ** 2).sum(1)  # noqa: E731
    loss_fn(model(x), y).mean().backward()
    opt.step()  # give Adam state to reset
    with torch.no_grad():  # put the weights back to the hand-computed values
        model[0].parametrizations.weight.original.copy_(torch.tensor([[0.5, -0.1, 0], [0, 2.0, 0]]))
    state = opt.state[model[0].parametrizations.weight.original]
    state["exp_avg"].fill_(1.0)  # non-zero moments everywhere, to see which are reset
    state["exp_avg_sq"].fill_(1.0)
    ctx = SimpleNamespace(step=1, total=10, x=x, y=y, loss_fn=loss_fn, optimizer=opt, seed=0)
    rigl = RigL(0.5, every=1, fraction=0.3)
    # W_eff x = [0.5 - 0.2, 4.0] -> dL/dW_eff = 2 r xᵀ = [[0.6, 1.2, 1.8], [8, 16, 24]];
    # k = round(0.34 * 3) = 1: drop |-0.1| at (0, 1); grow the largest |g| not kept: (1, 2)
    masks = rigl.update(model, ctx, 0.34)
    assert masks["0.weight"].tolist() == [[True, False, False], [False, True, True]]
    stored = model[0].parametrizations.weight.original
    assert stored.tolist() == [[0.5, 0.0, 0.0], [0.0, 2.0, 0.0]]
    assert state["exp_avg"][1, 2] == 0 and state["exp_avg_sq"][1, 2] == 0
    assert state["exp_avg"][0, 1] == 0  # the dropped one: zeroed by apply_masks
    assert state["exp_avg"][0, 0] == 1 and state["exp_avg"][1, 1] == 1  # survivors keep theirs
    assert rigl.log == [
        {"step": 1, "fraction": 0.34, "dropped": {"0.weight": 1}, "new": {"0.weight": 1}}
    ]


def test_cosine_drop_fraction():
    assert drop_fraction(0.3, 0, 100) == pytest.approx(0.3)
    assert drop_fraction(0.3, 50, 100) == pytest.approx(0.15)
    assert drop_fraction(0.3, 100, 100) == pytest.approx(0.0, abs=1e-15)
    assert drop_fraction(0.3, 25, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert drop_fraction(0.3, 70, 100, "constant") == 0.3


def test_same_seed_same_masks_and_set_random_regrowth(iris):
    a, _ = _run(iris, SET(0.3, every=3, distribution="uniform"), seed=1, epochs=3)
    b, _ = _run(iris, SET(0.3, every=3, distribution="uniform"), seed=1, epochs=3)
    c, _ = _run(iris, SET(0.3, every=3, distribution="uniform"), seed=2, epochs=3)
    ma, mb, mc = get_masks(a), get_masks(b), get_masks(c)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert any(not torch.equal(ma[n], mc[n]) for n in ma)
    assert all(int(m.sum()) == round(0.3 * m.numel()) for m in ma.values())
    method = SET(0.3, every=3, regrow_init="random", distribution="uniform")
    _, seen = _run(iris, method, epochs=2, optim="sgd")
    init = method.initial_masks(build(MLP, [4, 32, 32, 3], seed=0))
    _, masks, layers = seen[0]
    new = masks["layers.0.weight"] & ~init["layers.0.weight"]
    weight, state = layers[0]
    assert new.any() and torch.all(weight[new] != 0) and torch.all(weight[new].abs() <= 0.5)
    assert torch.all(state["momentum_buffer"][new] == 0)  # SGD momentum reset too


@pytest.mark.parametrize(
    ("build_fn", "match"),
    [
        (lambda: SET(0.0), r"density must be in \(0, 1\]"),
        (lambda: RigL(1.2), r"density must be in \(0, 1\]"),
        (lambda: SET(0.5, every=0), "every"),
        (lambda: RigL(0.5, fraction=1.0), "drop fraction"),
        (lambda: SET(0.5, distribution="normal"), "unknown sparsity distribution"),
        (lambda: SET(0.5, regrow_init="kaiming"), "unknown regrow_init"),
        (lambda: make_dst("snfs", 0.5), "unknown dynamic sparse method"),
    ],
)
def test_bad_input(build_fn, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_fn()
    assert "\n" not in str(err.value)


def test_unprepared_model_is_refused(iris):
    with pytest.raises(ConfigError, match="prepare"):
        train(
            build(MLP, [4, 8, 3], seed=0), iris, _cfg(1), data_seed=0, callbacks=[SET(0.5, every=1)]
        )


def test_rigl_through_train_members_with_initial_masks_in_the_spec(iris):
    factory = lambda seed: build(MLP, [4, 32, 32, 3], seed=seed)  # noqa: E731
    methods = []

    def callbacks(i):
        methods.append(RigL(0.25, every=2, distribution="uniform"))
        return [methods[-1]]

    template = RigL(0.25, distribution="uniform")
    specs = [MemberSpec(seed=s, masks=template.initial_masks(factory(s), seed=s)) for s in (0, 1)]
    _, finals = train_members(factory, specs, iris, _cfg(2), engine="loop", callbacks=callbacks)
    assert [len(m.log) for m in methods] == [2, 2]  # steps 2 and 4 (T_end = 4.5 -> 5)
    for final in finals:
        for name in ("layers.0.weight", "layers.1.weight", "layers.2.weight"):
            assert int((final[name] != 0).sum()) <= round_half_up(0.25, final[name].numel())
