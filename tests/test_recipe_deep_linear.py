"""The deep-linear recipe: learning time and half-time read-outs, whitening, claim logic on
hand-made rows, bad input, and a smoke run."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.init.deep_linear import (
    DeepLinear,
    half_strength_time,
    learning_time,
    whiten,
)
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_learning_time_and_half_time():
    assert learning_time([10.0, 5.0, 1.5, 0.9, 0.5]) == 3
    assert learning_time([10.0, 5.0, 1.0]) is None  # 1.0 is not below 10%
    assert half_strength_time([0, 10, 20], [0.0, 0.5, 1.5], 2.0) == pytest.approx(15.0)
    assert half_strength_time([0, 10], [0.0, 0.1], 2.0) is None


def test_whitening_is_exact_and_keeps_the_teacher():
    from weightlab.data import load_dataset

    task = load_dataset("deep_linear", "cpu", d_in=8, d_out=8, n_train=20, noise=0.0)
    w = whiten(task)
    x = w.train.x.double()
    assert torch.allclose(x.T @ x / len(x), torch.eye(8, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(w.train.y, w.train.x @ task.info["weight"], atol=1e-5)
    assert w.val is task.val


def _rows(t2_o, t32_o, t2_g, t32_g, cens32_g=0):
    def row(d, init, t, c=0):
        return {
            "depth": d,
            "init": init,
            "time_mean": t,
            "time_std": 0.0,
            "censored": c,
            "diverged": 0,
            "times": [t],
            "lr": 0.05 / d,
        }

    return [
        row(2, "orthogonal", t2_o),
        row(32, "orthogonal", t32_o),
        row(2, "gaussian", t2_g),
        row(32, "gaussian", t32_g, cens32_g),
    ]


def _a(ok=True):
    seeds = [{"seed": 0, "diverged": False, "strengths": []}]
    rows = [
        {
            "s": 5.0,
            "max_rel_dev": 0.01,
            "half_times": [200.0],
            "half_time_mean": 200.0,
            "half_time_std": 0.0,
            "half_time_analytic": 213.0,
        },
        {
            "s": 3.0,
            "max_rel_dev": 0.02 if ok else 0.07,
            "half_times": [330.0 if ok else 150.0],
            "half_time_mean": 330.0,
            "half_time_std": 0.0,
            "half_time_analytic": 333.0,
        },
    ]
    return {"seeds": seeds}, rows


def test_claims_on_hand_made_rows():
    cfg = make_config("deep-linear")
    a, a_rows = _a()
    got = {c.id: c.verdict for c in DeepLinear.check_claims(cfg, a, a_rows, _rows(25, 35, 20, 120))}
    assert got == {
        "a-sigmoid": "held",
        "a-order": "held",
        "b-orthogonal": "held",
        "b-gaussian": "held",
    }
    a, a_rows = _a(ok=False)
    got = {c.id: c.verdict for c in DeepLinear.check_claims(cfg, a, a_rows, _rows(25, 45, 20, 30))}
    assert got == {
        "a-sigmoid": "did not hold",
        "a-order": "did not hold",
        "b-orthogonal": "did not hold",
        "b-gaussian": "did not hold",
    }
    # a censored deep Gaussian time is a lower bound: the ratio claim can still hold
    got = {c.id: c for c in DeepLinear.check_claims(cfg, a, a_rows, _rows(25, 35, 20, 4000, 5))}
    assert got["b-gaussian"].verdict == "held" and "lower bound" in got["b-gaussian"].detail
    # a censored shallow time leaves the claim untested
    rows = _rows(25, 35, 20, 120)
    rows[2]["censored"] = 1
    got = {c.id: c.verdict for c in DeepLinear.check_claims(cfg, a, a_rows, rows)}
    assert got["b-gaussian"] == "not tested"


def test_bad_input():
    with pytest.raises(ConfigError, match="decreasing"):
        make_config("deep-linear", singular_values="1,3")
    with pytest.raises(ConfigError, match="whitened"):
        make_config("deep-linear", n_train=10)
    with pytest.raises(ConfigError, match="depths"):
        make_config("deep-linear", depths="2,2")


def test_smoke_run(tmp_path):
    cfg = make_config("deep-linear", smoke=True)
    _, summary = run_recipe("deep-linear", cfg, out=tmp_path / "run")
    got = {c["id"]: c["verdict"] for c in summary["claims"]}
    assert got["a-sigmoid"] == "held" and got["a-order"] == "held"
    assert got["b-orthogonal"] == "not tested"  # the smoke run has no depth 32
    assert {r["depth"] for r in summary["part_b"]["rows"]} == {2, 4}
