"""Recipe ``universality-lens`` [#26]: config checks, the NTK-parametrized SGLD chains, the
regret bookkeeping and the claim logic on hand-made rows."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.logistic_teacher import teacher_prob
from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.universality_lens import (
    SummedLogLoss,
    UniversalityLens,
    UniversalityLensConfig,
    ensemble_prob,
    log_loss,
    ntk_factory,
    sgld_config,
)
from weightlab.runs.rundir import RunDir


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"widths": "64,16"}, "increase strictly"),
        ({"widths": "16,16"}, "increase strictly"),
        ({"widths": "16"}, "at least two"),
        ({"n_max": 24}, "power of two"),
        ({"n_max": 8}, "power of two"),
        ({"eta": 0.0}, "--eta"),
        ({"eta": -1e-3}, "--eta"),
    ],
)
def test_bad_config(over, match):
    with pytest.raises(ConfigError, match=match):
        UniversalityLensConfig(**over)


def test_blocks_double():
    assert UniversalityLensConfig().block_ends == [8, 16, 32, 64, 128, 256]


def test_task_prefix_and_teacher():
    """The sequence grows by extension; labels follow σ(β w*ᵀx) (mean over 20,000 draws)."""
    a = load_dataset("teacher_logistic", "cpu", n_train=16, seed=3)
    b = load_dataset("teacher_logistic", "cpu", n_train=20000, seed=3)
    assert torch.equal(a.train.x, b.train.x[:16]) and torch.equal(a.train.y, b.train.y[:16])
    w = b.info["w_star"]
    assert float(w.norm()) == pytest.approx(1.0)
    p = teacher_prob(b.train.x, w, 3.0)
    assert abs(float(b.train.y.double().mean() - p.mean())) < 0.015


def test_prior_draw_is_ntk_scaled():
    """Stored weights have variance σ_p²/fan_in, biases σ_p²."""
    model = ntk_factory(10, 4096, 0.5)(0)
    w0, w1 = model.layers[0].weight.detach(), model.layers[1].weight.detach()
    assert float(w0.var()) == pytest.approx(0.25 / 10, rel=0.03)
    assert float(w1.var()) == pytest.approx(0.25 / 4096, rel=0.1)
    assert float(model.layers[0].bias.detach().var()) == pytest.approx(0.25, rel=0.1)


def test_sgld_groups_map_theta_to_stored_weights():
    cfg = sgld_config(10, 64, 2e-3, 0.5)
    assert cfg.name == "sgld" and cfg.weight_decay == pytest.approx(4.0)
    mult = {g.match: (g.lr_mult, g.wd_mult) for g in cfg.groups}
    assert mult[("layers.0.weight",)] == (0.1, 10.0)
    assert mult[("layers.1.weight",)] == (1 / 64, 64.0)


def test_summed_loss_and_log_loss():
    pred = torch.tensor([[0.0], [2.0], [-1.0]], dtype=torch.float64)
    y = torch.tensor([1, 0, 0])
    got = SummedLogLoss(3)(pred, y)
    want = 3 * torch.tensor([math.log(2), math.log(1 + math.exp(2)), math.log(1 + math.exp(-1))])
    torch.testing.assert_close(got, want.double())
    p1 = torch.sigmoid(pred[:, 0])
    torch.testing.assert_close(log_loss(p1, y) * 3, want.double())


def test_ensemble_prob_averages_probabilities():
    states = [ntk_factory(3, 5, 1.0)(s).state_dict() for s in (0, 1)]
    x = torch.randn(4, 3, dtype=torch.float64)
    probs = []
    for s in (0, 1):
        model = ntk_factory(3, 5, 1.0)(s).double()
        probs.append(torch.sigmoid(model(x)[:, 0]))
    torch.testing.assert_close(ensemble_prob(states, x), (probs[0] + probs[1]) / 2)


def _row(arm, h, values, prior=1.0, steps=100):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return {
        "arm": arm,
        "width": h,
        "prior_std": prior,
        "steps": steps,
        "regret_mean": m,
        "regret_std": sd,
        "regret_se": sd / math.sqrt(len(values)),
        "regret_values": values,
        "excluded": [],
    }


def _rows(wide, control, long):
    return [
        _row("main", 16, [10.0, 11.0, 12.0]),
        _row("main", 256, [10.0, 11.0, 12.0]),
        _row("main", 1024, wide),
        _row("control", 256, control, prior=0.2),
        _row("long", 16, long, steps=200),
    ]


def test_claim_held_failed_and_not_tested():
    check = UniversalityLens.check_claims
    ok_ctrl, ok_long = [20.0, 21.0, 22.0], [10.5, 11.0, 11.5]
    assert check(_rows([11.0, 12.0, 13.0], ok_ctrl, ok_long))[0].held is True
    # 2 pooled SE = 2·√(2/3) ≈ 1.63: a mean 3 nats higher does not hold
    assert check(_rows([14.0, 15.0, 13.0], ok_ctrl, ok_long))[0].held is False
    weak = check(_rows([11.0, 12.0, 13.0], [12.0, 13.0, 14.0], ok_long))[0]
    assert weak.held is None and "positive control failed" in weak.detail
    moving = check(_rows([11.0, 12.0, 13.0], ok_ctrl, [9.0, 9.5, 10.0]))[0]
    assert moving.held is None and "precondition failed" in moving.detail


def test_tiny_run_and_broken_run(tmp_path):
    """End to end at toy size: every arm has its regret; a diverging step size is refused
    a verdict (not tested)."""
    recipe = UniversalityLens()
    small = dict(UniversalityLens.smoke, seeds=2)
    cfg = UniversalityLensConfig(**small)
    summary = recipe.run(cfg, RunDir(tmp_path / "ok", recipe.name, cfg).open())
    assert {(r["arm"], r["width"]) for r in summary["rows"]} == {
        ("main", 4),
        ("main", 8),
        ("control", 8),
        ("long", 4),
    }
    assert all(len(r["regret_values"]) == 2 for r in summary["rows"])
    assert all(len(r["curve_mean"]) == len(cfg.block_ends) for r in summary["rows"])
    broken = UniversalityLensConfig(**{**small, **UniversalityLens.broken})
    out = recipe.run(broken, RunDir(tmp_path / "bad", recipe.name, broken).open())
    assert out["diverged_members"] and out["claims"][0]["held"] is None
