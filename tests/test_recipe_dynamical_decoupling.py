"""The dynamical-decoupling recipe [#98] and its task teacher_relu: the task's target, the
mean-field learning rates (lr_mult = 1/m² on the stored readout equals GD on a), the
log-spaced steps, the time scales on hand-made curves, the snapshot measurements against a
per-member forward pass, a smoke run, bad input, and the claim logic."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.single_index import CENTRE
from weightlab.errors import ConfigError, DataError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.recipes.dynamics.dynamical_decoupling import (
    DynamicalDecoupling,
    DynamicalDecouplingConfig,
    log_steps,
    snapshot_series,
    time_scales,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dd") / "run"
    run_recipe("dynamical-decoupling", make_config("dynamical-decoupling", smoke=True), out=out)
    return out


def test_teacher_relu_task():
    data = load_dataset("teacher_relu", n_train=20000, n_val=5, n_test=20000, d=8, noise=0.5)
    w = data.info["w_star"]
    assert float(w.norm()) == pytest.approx(1.0, abs=1e-6)
    clean = torch.relu(data.test.x @ w)[:, None] - CENTRE
    torch.testing.assert_close(data.test.y, clean)  # clean test labels by default
    assert CENTRE == pytest.approx(1 / math.sqrt(2 * math.pi))
    # centred target: mean 0, variance 1/2 - 1/(2 pi); training noise variance 0.25
    assert float(data.test.y.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(data.test.y.var()) == pytest.approx(0.5 - 1 / (2 * math.pi), rel=0.05)
    resid = data.train.y - (torch.relu(data.train.x @ w)[:, None] - CENTRE)
    assert float(resid.var()) == pytest.approx(0.25, rel=0.05)
    again = load_dataset("teacher_relu", n_train=10, n_val=5, n_test=20000, d=8, noise=0.5)
    assert torch.equal(again.test.x, data.test.x)  # the test split does not depend on n_train
    with pytest.raises(DataError, match="noise"):
        load_dataset("teacher_relu", noise=-1.0)


def test_readout_lr_mult_is_mean_field_gd():
    """One GD step of the stored MLP (readout ã = a/m, lr_mult 1/m²) equals one GD step
    with step η on f = (1/m) Σ a_j ReLU(w_jᵀx) (loss: mean squared error)."""
    from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig
    from weightlab.train.loop import train

    d, m, n, eta = 5, 7, 30, 0.05 * 7
    data = load_dataset("teacher_relu", n_train=n, n_val=2, n_test=2, d=d)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    a = torch.randn(m, generator=g, dtype=torch.float64)
    model = build(MLP, [d, m, 1], seed=0).double()
    with torch.no_grad():
        model.layers[0].weight.copy_(w)
        model.layers[0].bias.zero_()
        model.layers[1].weight.copy_(a[None] / m)
        model.layers[1].bias.zero_()
    optim = OptimConfig(
        "sgd",
        lr=eta,
        groups=(ParamGroup(("*.bias",), 0.0), ParamGroup(("layers.1.weight",), 1.0 / m**2)),
    )
    train(model, data, TrainConfig(1, n, 1, optim, loss="mse"), 0, dtype=torch.float64)
    wr, ar = w.clone().requires_grad_(), a.clone().requires_grad_()
    x, y = data.train.x.double(), data.train.y[:, 0].double()
    f = (torch.relu(x @ wr.T) * ar).sum(-1) / m
    ((f - y) ** 2).mean().backward()
    torch.testing.assert_close(model.layers[0].weight.detach(), w - eta * wr.grad)
    torch.testing.assert_close(model.layers[1].weight.detach()[0] * m, a - eta * ar.grad)
    assert float(model.layers[0].bias.detach().abs().sum()) == 0.0


def test_log_steps():
    s = log_steps(20000, 40)
    assert len(s) == 40 and s[0] == 1 and s[-1] == 20000
    assert all(b > a for a, b in zip(s, s[1:], strict=False))
    assert log_steps(10, 40) == list(range(1, 11))
    assert log_steps(300, 12)[-1] == 300


def test_time_scales_hand_made():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    err = [1.0, 0.8, 0.3, 0.12, 0.1, 0.2, 0.4, 0.5, 0.6]
    c = time_scales(steps, err)
    # 90% of the drop 1.0 -> 0.1 is reached at 0.19: step 4; half the rise 0.1 -> 0.6 (0.35)
    # first reached after the minimum at step 32
    assert (c["t_feat"], c["t_min"], c["t_over"]) == (4, 8, 32)
    assert c["ratio"] == pytest.approx(8.0)
    still = time_scales(steps[:5], err[:5])
    assert still["t_over"] is None and still["ratio"] is None


def test_snapshot_series_matches_a_forward_pass():
    data = load_dataset("teacher_relu", n_train=50, n_val=2, n_test=60, d=6)
    m = 4
    models = [build(MLP, [6, m, 1], seed=s) for s in (0, 1, 2)]
    stacked = {
        k: torch.stack([dict(mm.named_parameters())[k].detach() for mm in models])
        for k in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias")
    }
    vals = snapshot_series(stacked, data, data.info["w_star"], m)
    for i, mm in enumerate(models):
        with torch.no_grad():
            test = float(((mm(data.test.x) - data.test.y) ** 2).mean())
            train = float(((mm(data.train.x) - data.train.y) ** 2).mean())
        w, a = mm.layers[0].weight.detach(), mm.layers[1].weight.detach()[0]
        align = float(((w @ data.info["w_star"]).abs() / w.norm(dim=1)).mean())
        norm = float((m * a).abs() @ w.norm(dim=1)) / m
        assert float(vals["test_err"][i]) == pytest.approx(test, rel=1e-5)
        assert float(vals["train_err"][i]) == pytest.approx(train, rel=1e-5)
        assert float(vals["alignment"][i]) == pytest.approx(align, rel=1e-5)
        assert float(vals["norm"][i]) == pytest.approx(norm, rel=1e-5)
        assert float(vals["path_norm"][i]) == pytest.approx(
            float(a.abs() @ w.abs().sum(1)), rel=1e-5
        )


def test_bad_input_is_one_line():
    for bad in (
        {"scales": "1,0.01"},
        {"scales": "0,1"},
        {"scales": "a,b"},
        {"noise": -0.1},
        {"width": 0},
    ):
        with pytest.raises(ConfigError, match="^--") as e:
            DynamicalDecouplingConfig(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--evals"):
        DynamicalDecoupling().validate(DynamicalDecouplingConfig(steps=10, evals=40), {})


def test_smoke_run(smoke):
    s = read_json(smoke / "summary.json")
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    assert [r["scale"] for r in s["rows"]] == [0.01, 1.0, 4.0]
    r = s["rows"][0]
    assert r["steps"][0] == 0 and len(r["steps"]) == 13 and r["steps"][-1] == 300
    assert len(r["test_err_mean"]) == 13 and r["n"] == 2
    # the zero-ish predictor at s = 0.01 starts at the target's variance
    assert r["test_err_mean"][0] == pytest.approx(s["var_test"], rel=0.05)
    assert r["curve"]["e_min"] < 0.5 * r["test_err_mean"][0]  # it learned


def _row(scale, err, align, n=5, diverged=(), steps=(0, 1, 10, 100, 1000, 10000)):
    steps = list(steps)
    return {
        "scale": scale,
        "steps": steps,
        "n": n,
        "diverged": list(diverged),
        "curve": time_scales(steps, err),
        "alignment_peak": max(align),
        "alignment_final": align[-1],
        "norm_at_min": 1.0,
        "norm_final": 5.0,
        "seeds_ratio": [10.0] * n,
        "r2_at_min": 1 - min(err) / err[0],
    }


def test_claim_logic():
    check = DynamicalDecoupling.check_claims
    good = _row(0.01, [0.34, 0.33, 0.1, 0.05, 0.2, 0.3], [0.1, 0.1, 0.3, 0.45, 0.3, 0.25])
    big = _row(4.0, [0.4, 0.2, 0.09, 0.1, 0.2, 0.3], [0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert [c.held for c in check([good, big])] == [True, True, True]
    # a rise right after feature learning: t_feat = 2, t_over = 3
    quick = _row(
        0.01, [0.34, 0.2, 0.05, 0.3, 0.3, 0.3], [0.1, 0.4, 0.45, 0.2, 0.2, 0.2], steps=range(6)
    )
    res = check([quick, big])
    assert res[0].held is False and res[1].held is True
    mild = _row(0.01, [0.34, 0.33, 0.1, 0.05, 0.06, 0.08], [0.1, 0.1, 0.3, 0.45, 0.44, 0.43])
    res = check([mild, big])
    assert res[1].held is False  # rise 0.08 / 0.05 < 2 and no unlearning
    worse = _row(4.0, [0.4, 0.2, 0.05, 0.06, 0.2, 0.3], [0.1] * 6)
    assert check([good, worse])[2].held is False
    # the minimum at the end: (a), (b) not tested; one scale only: (c) not tested
    falling = _row(0.01, [0.34, 0.3, 0.2, 0.1, 0.06, 0.05], [0.1, 0.2, 0.3, 0.4, 0.45, 0.5])
    assert [c.held for c in check([falling])] == [None, None, None]
    # a diverged member at the small scale
    bad = _row(0.01, [0.34, 0.33, 0.1, 0.05, 0.2, 0.3], [0.1] * 6, diverged=["s=0.01 seed 1"])
    assert [c.held for c in check([bad, big])] == [None, None, None]
