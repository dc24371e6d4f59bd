"""Invariants of the weight-operation core on masked models: pruned weights are exactly
zero everywhere (forward, gradient, optimizer moments, checkpoints), masks nest across
IMP rounds, merge/deepcopy/rewind behave, selectors pick what they say."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize

from weightlab.core import (
    Mask,
    Selector,
    apply_masks,
    density,
    get_masks,
    merge,
    restore_snapshot,
    select,
    take_snapshot,
    transforms_of,
)
from weightlab.data import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, build
from weightlab.seeding import generator
from weightlab.sparsity import imp_step, layer_rates, random_masks, weights_of
from weightlab.train import OptimConfig, TrainConfig, make_optimizer, train
from weightlab.train.order import batch_indices

WIDTHS = [12, 16, 8, 4]


pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed: int = 0) -> MLP:
    return build(MLP, WIDTHS, seed=seed)


def _shapes(model) -> dict[str, torch.Size]:
    return {n: getattr(m, a).shape for n, (m, a) in select(model).items()}


def _masks(model, density_: float = 0.5, seed: int = 1) -> dict[str, torch.Tensor]:
    shapes = _shapes(model)
    return random_masks(shapes, {n: density_ for n in shapes}, generator=generator(seed))


def _task(n_train: int = 96, seed: int = 0) -> TaskData:
    g = generator(seed)
    w = torch.randn(WIDTHS[0], WIDTHS[-1], generator=g)

    def split(n: int) -> Split:
        x = torch.randn(n, WIDTHS[0], generator=g)
        return Split(x, (x @ w).argmax(-1))

    return TaskData("tiny", split(n_train), split(32), split(32), WIDTHS[-1])


def _original(model, name: str) -> torch.Tensor:
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name).parametrizations[attr].original


# --- pruned weights are exactly zero -------------------------------------------------


def test_pruned_weights_zero_in_forward_even_if_storage_is_not():
    model = _mlp()
    masks = _masks(model)
    apply_masks(model, masks)
    x = torch.randn(5, WIDTHS[0], generator=generator(3))
    before = model(x)
    for name, m in masks.items():
        assert torch.all(_original(model, name)[~m] == 0)  # storage zeroed on apply
        with torch.no_grad():  # corrupt the stored pruned weights behind the mask's back
            _original(model, name)[~m] = 7.0
        module_name, _, attr = name.rpartition(".")
        eff = getattr(model.get_submodule(module_name), attr)
        assert torch.all(eff[~m] == 0)
        assert torch.equal(eff[m], _original(model, name)[m])
    assert torch.equal(model(x), before)


def test_pruned_weights_get_exactly_zero_gradient():
    model = _mlp()
    masks = _masks(model, 0.3)
    apply_masks(model, masks)
    x = torch.randn(8, WIDTHS[0], generator=generator(4))
    model(x).pow(2).sum().backward()
    for name, m in masks.items():
        grad = _original(model, name).grad
        assert torch.all(grad[~m] == 0)
        assert grad[m].abs().sum() > 0


@pytest.mark.parametrize(
    "optim",
    [
        OptimConfig("adam", lr=1e-2),
        OptimConfig("adam", lr=1e-2, weight_decay=0.1),
        OptimConfig("sgd", lr=1e-2, momentum=0.9, weight_decay=0.1),
    ],
    ids=["adam", "adam-wd", "sgd-momentum-wd"],
)
def test_optimizer_state_and_weights_stay_zero_at_pruned_positions(optim):
    model = _mlp()
    masks = _masks(model, 0.4)
    apply_masks(model, masks)
    opt = make_optimizer(model.parameters(), optim)
    g = generator(5)
    for _ in range(6):
        x = torch.randn(16, WIDTHS[0], generator=g)
        y = torch.randint(0, WIDTHS[-1], (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, m in masks.items():
        p = _original(model, name)
        assert torch.all(p[~m] == 0)
        assert not torch.equal(p[m], torch.zeros_like(p[m]))  # survivors did train
        state = opt.state[p]
        keys = ["exp_avg", "exp_avg_sq"] if optim.name == "adam" else ["momentum_buffer"]
        for key in keys:
            assert torch.all(state[key][~m] == 0), key
            assert state[key][m].abs().sum() > 0, key


def _adam_steps(model, opt, steps: int, seed: int = 5) -> None:
    g = generator(seed)
    for _ in range(steps):
        x = torch.randn(16, WIDTHS[0], generator=g)
        y = torch.randint(0, WIDTHS[-1], (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_masking_mid_training_zeroes_optimizer_state(with_optimizer):
    """Masks applied after Adam steps: with the optimizer passed, its moments are zeroed at
    pruned positions and pruned stored weights stay exactly 0; without it the leftover
    moments keep moving them (the behaviour ``optimizer=`` fixes)."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    params = dict(model.named_parameters())
    _adam_steps(model, opt, 5)
    masks = _masks(model, 0.4)
    apply_masks(model, masks, optimizer=opt if with_optimizer else None)
    for name in masks:  # the optimizer's Parameter is the transform's stored original
        assert _original(model, name) is params[name]
    _adam_steps(model, opt, 5, seed=6)
    for name, m in masks.items():
        p = _original(model, name)
        if with_optimizer:
            assert torch.all(p[~m] == 0)
            assert torch.all(opt.state[p]["exp_avg"][~m] == 0)
            assert torch.all(opt.state[p]["exp_avg_sq"][~m] == 0)
            assert opt.state[p]["exp_avg"][m].abs().sum() > 0
        else:
            assert p[~m].abs().sum() > 0  # drifted away from zero


def test_masking_updates_zero_sgd_momentum_of_an_already_masked_layer():
    model = _mlp()
    apply_masks(model, _masks(model, 0.8))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    _adam_steps(model, opt, 3)
    tighter = {n: m & _masks(model, 0.5, seed=2)[n] for n, m in get_masks(model).items()}
    apply_masks(model, tighter, optimizer=opt)
    _adam_steps(model, opt, 3, seed=7)
    for name, m in tighter.items():
        p = _original(model, name)
        assert torch.all(p[~m] == 0)
        assert torch.all(opt.state[p]["momentum_buffer"][~m] == 0)


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(6, 6)
        self.dec = torch.nn.Linear(6, 6)
        self.dec.weight = self.enc.weight  # tied


@pytest.mark.parametrize("name", ["enc.weight", "dec.weight"])
def test_tied_parameters_are_refused_naming_both_aliases(name):
    model = _Tied()
    with pytest.raises(
        ConfigError, match=r"'(enc|dec)\.weight' is shared with '(dec|enc)\.weight'"
    ):
        apply_masks(model, {name: torch.ones(6, 6)})
    assert not parametrize.is_parametrized(model.enc)
    apply_masks(model, {"enc.bias": torch.ones(6)})  # untied parameters are fine
    assert parametrize.is_parametrized(model.enc, "bias")
    assert not parametrize.is_parametrized(model.enc, "weight")


def test_checkpoint_holds_zeros_and_reloads(tmp_path):
    model = _mlp()
    masks = _masks(model, 0.25)
    apply_masks(model, masks)
    train(model, _task(), TrainConfig(epochs=2, batch_size=16), data_seed=0)
    path = tmp_path / "ckpt.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_file(str(path))
    for name, m in masks.items():
        module_name, _, attr = name.rpartition(".")
        stored = loaded[f"{module_name}.parametrizations.{attr}.original"]
        assert torch.all(stored[~m] == 0)
        assert torch.equal(loaded[f"{module_name}.parametrizations.{attr}.0.mask"].bool(), m)
    fresh = _mlp(seed=9)
    apply_masks(fresh, _masks(fresh, 0.9, seed=7))  # same structure, other values
    fresh.load_state_dict(loaded, strict=True)
    x = torch.randn(4, WIDTHS[0], generator=generator(6))
    assert torch.equal(fresh(x), model(x))
    assert all(torch.equal(get_masks(fresh)[n], m) for n, m in masks.items())


# --- masks: exact counts, nesting across IMP rounds ----------------------------------


def test_masks_nested_across_imp_rounds_with_exact_counts():
    model = _mlp()
    task = _task()
    names = list(_shapes(model))
    rates = layer_rates(names, 0.3, {"last": 0.15})
    exact = {n: Fraction(str(r)) for n, r in rates.items()}
    prev = None
    alive = {n: s.numel() for n, s in _shapes(model).items()}
    for r in range(4):
        masks = imp_step(weights_of(model), prev, rates)
        apply_masks(model, masks)
        got = get_masks(model)
        for n in names:
            removed = int(exact[n] * alive[n] + Fraction(1, 2))  # round half up
            alive[n] -= removed
            assert int(got[n].sum()) == alive[n]
            if prev is not None:
                assert torch.all(got[n] <= prev[n])  # nested: new ⊆ prev
            w = weights_of(model)[n]
            assert int((w != 0).sum()) <= alive[n] and torch.all(w[~got[n]] == 0)
        assert density(got) == pytest.approx(
            sum(alive.values()) / sum(m.numel() for m in got.values())
        )
        prev = got
        train(model, task, TrainConfig(epochs=1, batch_size=32), data_seed=r)


def test_apply_masks_keeps_exactly_k_and_updates_in_place():
    model = _mlp()
    shapes = _shapes(model)
    keep = {n: 1 + i * 5 for i, n in enumerate(shapes)}
    m1 = random_masks(shapes, keep=keep, generator=generator(0))
    apply_masks(model, m1)
    assert {n: int(m.sum()) for n, m in get_masks(model).items()} == keep
    m2 = random_masks(shapes, keep={n: 0 for n in shapes}, generator=generator(1))
    apply_masks(model, m2)  # second call updates the existing Mask, no second transform
    for n in shapes:
        assert len([t for t in transforms_of(model, n) if isinstance(t, Mask)]) == 1
        assert torch.all(weights_of(model)[n] == 0)


# --- merge and deepcopy --------------------------------------------------------------


def test_merge_leaves_plain_module_that_loads_into_unpruned_copy():
    model = _mlp()
    masks = _masks(model, 0.3)
    apply_masks(model, masks)
    x = torch.randn(6, WIDTHS[0], generator=generator(2))
    expected = model(x)
    merged = merge(model)
    assert not any(parametrize.is_parametrized(m) for m in merged.modules())
    assert type(merged.layers[0]) is torch.nn.Linear
    assert not any("mask" in k or "parametrizations" in k for k in merged.state_dict())
    plain = _mlp(seed=5)
    assert set(plain.state_dict()) == set(merged.state_dict())
    plain.load_state_dict(merged.state_dict(), strict=True)
    assert torch.equal(plain(x), expected)
    for name, m in masks.items():
        assert torch.all(plain.get_parameter(name)[~m] == 0)


def test_deepcopy_of_masked_model_is_independent():
    model = _mlp()
    masks = _masks(model, 0.5)
    apply_masks(model, masks)
    x = torch.randn(3, WIDTHS[0], generator=generator(8))
    clone = copy.deepcopy(model)
    assert torch.equal(clone(x), model(x))
    assert all(torch.equal(get_masks(clone)[n], m) for n, m in masks.items())
    before = model(x)
    name = next(iter(masks))
    with torch.no_grad():
        _original(clone, name).add_(1.0)
    apply_masks(clone, {name: torch.ones_like(masks[name])})
    assert torch.equal(model(x), before)
    assert torch.equal(get_masks(model)[name], masks[name])
    assert not torch.equal(clone(x), before)


# --- rewinding -----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["restore-then-mask", "mask-then-restore"])
def test_rewind_to_theta0_then_mask(order):
    model = _mlp()
    theta0 = take_snapshot(model)
    train(model, _task(), TrainConfig(epochs=2, batch_size=16), data_seed=0)
    masks = _masks(model, 0.4)
    if order == "restore-then-mask":
        restore_snapshot(model, theta0)
        apply_masks(model, masks)
    else:
        apply_masks(model, masks)
        restore_snapshot(model, theta0)
    for name, m in masks.items():
        w = weights_of(model)[name]
        assert torch.equal(w[m], theta0[name][m])
        assert torch.all(w[~m] == 0)
        assert torch.all(_original(model, name)[~m] == 0)
    for name in ("layers.0.bias", "layers.2.bias"):  # unmasked parameters rewound too
        assert torch.equal(model.get_parameter(name), theta0[name])


def test_snapshot_at_step_k_matches_training_k_steps():
    task = _task(n_train=96)
    cfg2 = TrainConfig(epochs=2, batch_size=16)
    k = 96 // 16  # one epoch
    model = _mlp()
    theta0 = take_snapshot(model)
    result = train(model, task, cfg2, data_seed=3, snapshot_steps=[0, k])
    assert set(result.snapshots) == {0, k}
    assert all(torch.equal(result.snapshots[0][n], theta0[n]) for n in theta0)
    short = _mlp()
    train(short, task, TrainConfig(epochs=1, batch_size=16), data_seed=3)
    theta_k = take_snapshot(short)
    assert all(torch.equal(result.snapshots[k][n], theta_k[n]) for n in theta_k)
    assert not torch.equal(theta_k["layers.0.weight"], theta0["layers.0.weight"])
    # the first epoch's batches are the same in a 1- and a 2-epoch run
    assert torch.equal(batch_indices(96, 16, 2, 3)[:k], batch_indices(96, 16, 1, 3))


# --- selectors -----------------------------------------------------------------------


def test_selector_by_type_and_globs():
    cnn = build(CNN1D, 40, (4, 4), 5, 10, seed=0)
    assert list(select(cnn, ["conv"])) == ["features.0.weight", "features.2.weight"]
    assert list(select(cnn, ["linear"])) == ["classifier.weight"]
    assert list(select(cnn)) == ["features.0.weight", "features.2.weight", "classifier.weight"]
    assert list(select(cnn, [torch.nn.Linear], param="bias")) == ["classifier.bias"]
    mlp = _mlp()
    assert list(select(mlp, include=["layers.1"])) == ["layers.1.weight"]
    assert list(select(mlp, exclude=["layers.2", "layers.0"])) == ["layers.1.weight"]
    assert list(select(mlp, include=["layers.*"], exclude=["*.1"])) == [
        "layers.0.weight",
        "layers.2.weight",
    ]


def test_selector_roles_and_masked_models():
    mlp = _mlp()
    assert list(select(mlp, roles=["first"])) == ["layers.0.weight"]
    assert list(select(mlp, roles=["last"])) == ["layers.2.weight"]
    assert list(select(mlp, roles=["hidden"])) == ["layers.1.weight"]
    assert list(select(mlp, roles=["first", "last"])) == ["layers.0.weight", "layers.2.weight"]
    apply_masks(mlp, _masks(mlp))  # plain names survive parametrization
    assert list(Selector()(mlp)) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    one = build(MLP, [3, 2], seed=0)
    assert list(select(one, roles=["first"])) == list(select(one, roles=["last"]))


def test_bad_selector_role_or_type_raises():
    with pytest.raises(ConfigError, match="role"):
        Selector(roles=("middle",))
    with pytest.raises(ConfigError, match="module type"):
        Selector(types=("lstm",))


# --- mask validation -----------------------------------------------------------------


def test_mask_shape_mismatch_and_non_binary_raise():
    model = _mlp()
    with pytest.raises(ConfigError, match="shape"):
        apply_masks(model, {"layers.0.weight": torch.ones(3, 3)})
    with pytest.raises(ConfigError, match="0 and 1"):
        apply_masks(model, {"layers.0.weight": torch.full((16, 12), 0.5)})
    with pytest.raises(ConfigError, match="no parameter"):
        apply_masks(model, {"layers.0.weights": torch.ones(16, 12)})
    apply_masks(model, {"layers.0.weight": torch.ones(16, 12)})
    with pytest.raises(ConfigError, match="shape"):  # also when updating an attached mask
        apply_masks(model, {"layers.0.weight": torch.ones(12, 16)})
    with pytest.raises(ConfigError, match="0 and 1"):
        apply_masks(model, {"layers.0.weight": torch.full((16, 12), 2.0)})


def test_snapshot_names_for_top_level_and_oddly_named_modules():
    # a parametrized top-level module (masking a bare Linear)
    lin = torch.nn.Linear(3, 2)
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    apply_masks(lin, {"weight": mask})
    snap = take_snapshot(lin)
    assert set(snap) == {"weight", "bias"}
    with torch.no_grad():
        lin.parametrizations.weight.original.add_(1.0)
    restore_snapshot(lin, snap)
    assert torch.equal(lin.weight, snap["weight"]) and torch.all(lin.weight[~mask] == 0)
    # a module literally named "original" keeps its name
    model = torch.nn.ModuleDict({"enc": torch.nn.ModuleDict({"original": torch.nn.Linear(2, 2)})})
    assert set(take_snapshot(model)) == {"enc.original.weight", "enc.original.bias"}
    apply_masks(model, {"enc.original.weight": torch.ones(2, 2)})
    assert set(take_snapshot(model)) == {"enc.original.weight", "enc.original.bias"}


def test_merged_copy_leaves_the_parametrized_original_working():
    import copy as _copy

    from weightlab.core import apply_masks, merge, merged_copy

    lin = torch.nn.Linear(6, 3)
    apply_masks(lin, {"weight": (torch.arange(18).reshape(3, 6) % 2).float()})
    w = lin.weight.detach().clone()
    out = merged_copy(lin)
    assert torch.equal(out.weight, w) and not hasattr(out, "parametrizations")
    assert torch.equal(lin.weight, w)  # the original still has its masked weight property
    # the pitfall it avoids: a plain deepcopy shares the parametrized class
    broken = _copy.deepcopy(lin)
    merge(broken)
    with pytest.raises(AttributeError):
        _ = lin.weight
