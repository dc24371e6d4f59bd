"""RelChaNet input selection (the step callback) and the baseline selectors."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.core import get_masks
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.population import MemberSpec
from weightlab.population.spec import build_member
from weightlab.sparsity.feature_selection import (
    RESET_SCALE,
    RelChaNet,
    column_mask,
    magnitude_feature_scores,
    n_candidates,
    random_features,
    top_k_features,
    variance_scores,
)
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_candidate_count_and_bad_k():
    assert n_candidates(64, 16) == math.ceil(0.2 * 48) == 10
    assert n_candidates(13, 8) == 1 and n_candidates(10, 5) == 1
    for bad in (0, 64, 65):
        with pytest.raises(ConfigError, match=f"cannot select k={bad} of 64 input features"):
            n_candidates(64, bad)


def test_baseline_scores_hand_computed():
    x = torch.tensor([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0], [0.0, 5.0, 6.0]])
    v = variance_scores(x)
    assert v.tolist() == pytest.approx([0.0, 8 / 3, 2 / 9])
    assert top_k_features(v, 2).tolist() == [1, 2]
    w = torch.tensor([[1.0, -2.0, 0.0], [1.0, 0.5, -3.0]])
    assert magnitude_feature_scores(w).tolist() == [2.0, 2.5, 3.0]
    assert top_k_features(torch.tensor([1.0, 1.0, 1.0, 0.0]), 2).tolist() == [0, 1]  # ties
    r = random_features(10, 4, seed=3)
    assert r.tolist() == sorted(set(r.tolist())) and len(r) == 4
    assert torch.equal(r, random_features(10, 4, seed=3))


def _run(d_seed=0, steps_interval=10, epochs=3, k=4):
    data = load_dataset("digits", "cpu")
    sel = RelChaNet(64, k, seed=d_seed, interval=steps_interval)
    factory = lambda s: build(MLP, [64, 16, 10], seed=s)  # noqa: E731
    model = build_member(factory, MemberSpec(seed=0, masks=sel.initial_mask(torch.Size((16, 64)))))
    seen = []

    def spy(m, ctx):
        seen.append((ctx.step, get_masks(m)["layers.0.weight"].clone(), sel.selected.clone()))

    cfg = TrainConfig(epochs, 64, 0, OptimConfig("adam", lr=1e-2))
    res = train(model, data, cfg, 0, callbacks=[sel, spy])
    return sel, model, seen, res


def test_relchanet_keeps_k_plus_candidates_active_and_updates_every_interval():
    sel, model, seen, res = _run()
    c = n_candidates(64, 4)
    assert c == 12
    steps = len(seen)  # 19 steps per epoch x 3
    assert sel.updates == steps // 10 and len(sel.history) == sel.updates
    for _step, mask, selected in seen:
        cols = mask.any(0)
        assert int(cols.sum()) == 4 + c  # k selected + c candidates, every step
        assert mask[:, cols].all()  # whole columns
        assert cols[selected].all()
    assert len(sel.selected) == 4 and sel.selected.tolist() == sorted(set(sel.selected.tolist()))
    # inactive columns are exactly zero in the stored weight
    w = model.layers[0].parametrizations.weight.original
    assert (w[:, ~seen[-1][1].any(0)] == 0).all()
    assert not res.diverged


def test_relchanet_scores_are_best_z_scores_and_entering_columns_are_tiny():
    """One update by hand: gradient sums -> column L1 -> z over active -> best kept;
    new candidates' columns reset to U(+-1e-8)."""
    torch.manual_seed(0)
    sel = RelChaNet(8, 2, seed=1, interval=2)
    model = build(MLP, [8, 3, 2], seed=0)
    from weightlab.core import apply_masks

    apply_masks(model, sel.initial_mask(torch.Size((3, 8))))
    active = sel.active.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    grads = []

    class Ctx:
        optimizer = opt

    for step in (1, 2):
        opt.zero_grad()
        model(torch.randn(5, 8)).sum().backward()
        grads.append(model.layers[0].parametrizations.weight.original.grad.clone())
        Ctx.step = step
        sel(model, Ctx)
    s = (grads[0] + grads[1]).double().abs().sum(0)[active]
    z = (s - s.mean()) / s.std(unbiased=False)
    assert torch.allclose(sel.best[active], z)
    assert torch.isinf(sel.best[~torch.isin(torch.arange(8), active)]).all()
    assert sel.selected.tolist() == sorted(active[torch.argsort(-z, stable=True)[:2]].tolist())
    entering = sel.active[~torch.isin(sel.active, active)]
    w = model.layers[0].parametrizations.weight.original
    assert entering.numel() == 2  # this seed swaps both candidates (c = ceil(0.2 * 6) = 2)
    assert (w[:, entering].abs() <= RESET_SCALE).all()
    assert (w[:, entering] != 0).any()


def test_relchanet_is_deterministic_and_refuses_wrong_input_size():
    a, _, _, _ = _run(epochs=1)
    b, _, _, _ = _run(epochs=1)
    assert a.history == b.history
    with pytest.raises(ConfigError, match="built for d=64"):
        RelChaNet(64, 4, seed=0).initial_mask(torch.Size((16, 32)))
    assert (
        column_mask(torch.Size((2, 4)), torch.tensor([1, 3])).tolist()
        == [[False, True, False, True]] * 2
    )
