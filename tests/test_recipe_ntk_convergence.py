"""The ntk-convergence recipe [#60]: a smoke run's outputs, the NTK-parametrized twin it
trains (same function, same GD step), the slope fit, bad input, and the claim logic on
hand-made rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.empirical import (
    empirical_ntk,
    mlp_to_ntk,
    ntk_lr_groups,
    ntk_mlp,
    ntk_to_mlp,
)
from weightlab.recipes.kernels.ntk_convergence import NTKConvergence, log_slope
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ntk") / "run"
    run_recipe("ntk-convergence", make_config("ntk-convergence", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "ntk_convergence.png").read_bytes().startswith(b"\x89PNG")
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == ["init", "train-depth-1", "train-depth-2"]
    s = read_json(smoke / "summary.json")
    assert [r["width"] for r in s["init_rows"]] == [16, 64]
    assert [(r["depth"], r["width"]) for r in s["train_rows"]] == [(1, 16), (1, 64), (2, 16)]
    assert all(r["n"] == 2 for r in s["train_rows"])
    # the error falls with width; eta = n / (2 lambda_max) for the loop's mean MSE
    assert s["init_rows"][1]["rel_err_mean"] < s["init_rows"][0]["rel_err_mean"]
    assert s["claims"][1]["verdict"] == "not tested"  # depth 2 has one width in the smoke


def test_ntk_twin_is_the_same_function_and_the_same_gd_step():
    torch.manual_seed(0)
    net = ntk_mlp([5, 32, 32, 1], w_std=1.3, b_std=0.5, seed=3)
    mlp = ntk_to_mlp(net)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    torch.testing.assert_close(mlp(x), net(x))
    lr = 0.3
    # one GD step on the NTK net's stored parameters
    loss = (net(x) - y).square().mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads, strict=True):
            p.sub_(lr * g)
    # the same step on the twin with the per-layer rates of ntk_lr_groups
    mults = {
        g.match[0]: g.lr_mult for g in ntk_lr_groups(ntk_mlp([5, 32, 32, 1], w_std=1.3, b_std=0.5))
    }
    loss = (mlp(x) - y).square().mean()
    names = [n for n, _ in mlp.named_parameters()]
    grads = torch.autograd.grad(loss, list(mlp.parameters()))
    with torch.no_grad():
        for n, p, g in zip(names, mlp.parameters(), grads, strict=True):
            p.sub_(lr * mults[n] * g)
    torch.testing.assert_close(mlp(x), net(x))
    back = mlp_to_ntk(mlp, net)
    torch.testing.assert_close(empirical_ntk(back, x), empirical_ntk(net, x))


def test_log_slope_and_width_checks():
    assert log_slope([64, 256, 1024], [1.0, 0.5, 0.25]) == pytest.approx(-0.5)
    with pytest.raises(ConfigError, match="increase"):
        make_config("ntk-convergence", init_widths="256,64")
    with pytest.raises(ConfigError, match="comma-separated"):
        make_config("ntk-convergence", train_widths="a,b")


def _rows(errs, changes):
    init = [{"width": w, "rel_err_mean": e} for w, e in errs.items()]
    train = [
        {"depth": d, "width": w, "kernel_change_mean": c, "test_r2_mean": 0.8, "excluded": []}
        for d, cs in changes.items()
        for w, c in cs.items()
    ]
    slopes = {
        "init": log_slope(list(errs), list(errs.values())),
        "train": {d: log_slope(list(cs), list(cs.values())) for d, cs in changes.items()},
    }
    return init, train, slopes


def test_claim_logic_on_hand_made_rows():
    ws = [64, 256, 1024, 4096]
    half = {w: 2.0 * w**-0.5 for w in ws}
    flat = {w: 0.3 for w in ws}
    a, b = NTKConvergence.check_claims(*_rows(half, {1: half, 2: half}))
    assert a.held and b.held
    a, b = NTKConvergence.check_claims(*_rows(flat, {1: half, 2: flat}))
    assert a.held is False and b.held is False  # depth 2 does not shrink
    init, train, slopes = _rows(half, {1: half})
    train[0]["excluded"] = ["depth 1 w=64 seed 0"]
    assert NTKConvergence.check_claims(init, train, slopes)[1].held is None
    init, train, slopes = _rows({64: 0.3}, {1: half})
    assert NTKConvergence.check_claims(init, train, slopes)[0].held is None
    assert math.isclose(slopes["train"][1], -0.5)
