"""The advani-saxe recipe: per-seed data through explicit orders (population == solo loop in
float64), the Gauss-Newton step against autograd, a smoke run's outputs and resume, bad
input, and the claim logic on hand-made rows."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.population.spec import MemberSpec
from weightlab.recipes.dynamics.advani_saxe import (
    AdvaniSaxe,
    AdvaniSaxeConfig,
    full_batch_orders,
    gauss_newton_max,
    log_grid,
    stacked_rows,
)
from weightlab.recipes.members import train_members
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json
from weightlab.seeding import generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(seed: int, n: int = 12, d: int = 5) -> TaskData:
    g = generator(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=g, dtype=torch.float64)
    return TaskData("t", Split(x, y), Split(x[:1], y[:1]), Split(x[:1], y[:1]), 0, "regression")


def test_per_seed_rows_population_equals_loop_and_plain_gd():
    parts = [_task(s) for s in range(3)]
    data, rows = stacked_rows(parts, "t")
    assert [r.tolist() for r in rows.values()] == [
        list(range(12 * s, 12 * s + 12)) for s in range(3)
    ]
    factory = model_factory(MLP, [5, 1], activation="linear")
    specs = [MemberSpec(seed=s, data_seed=s) for s in range(3)]
    lr, steps = 0.1, 25
    cfg = TrainConfig(
        steps,
        12,
        steps,
        OptimConfig("sgd", lr=lr, groups=(ParamGroup(("layers.0.bias",), lr_mult=0.0),)),
        loss="mse",
    )
    orders = full_batch_orders(rows, steps)
    out = {
        e: train_members(factory, specs, data, cfg, engine=e, orders=orders, dtype=torch.float64)[1]
        for e in ("population", "loop")
    }
    for s in range(3):
        pop, loop = out["population"][s], out["loop"][s]
        assert pop["layers.0.weight"].dtype == torch.float64
        torch.testing.assert_close(
            pop["layers.0.weight"], loop["layers.0.weight"], rtol=0, atol=1e-13
        )
        # plain GD on member s's own rows: w <- w - lr * (2/n) Xᵀ(Xw + b - y)
        w = factory(s).layers[0].weight.detach().double()[0]
        b = factory(s).layers[0].bias.detach().double()
        x, y = parts[s].train.x, parts[s].train.y[:, 0]
        for _ in range(steps):
            w = w - lr * 2 / 12 * x.T @ (x @ w + b - y)
        torch.testing.assert_close(pop["layers.0.weight"][0], w, rtol=0, atol=1e-12)
        torch.testing.assert_close(pop["layers.0.bias"], b, rtol=0, atol=0)  # frozen


@pytest.mark.parametrize("arm", ["full", "random_features"])
def test_gauss_newton_max_matches_autograd_jacobian(arm):
    torch.manual_seed(0)
    model = MLP([4, 7, 1]).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    if arm != "full":
        names = [n for n in names if n.startswith("layers.1")]
    params = dict(model.named_parameters())

    def f(*ps):
        p = dict(params) | dict(zip(names, ps, strict=True))
        return torch.func.functional_call(model, p, (x,))[:, 0]

    jac = torch.autograd.functional.jacobian(f, tuple(params[n] for n in names))
    j = torch.cat([t.reshape(9, -1) for t in jac], 1)
    expect = float(torch.linalg.eigvalsh(2 / 9 * j.T @ j)[-1])
    state = {k: v.detach() for k, v in model.state_dict().items()}
    assert gauss_newton_max(state, x, arm) == pytest.approx(expect, rel=1e-10)


def test_log_grid():
    g = log_grid(4000, 20)
    assert g[0] == 0 and g[-1] == 4000 and g == sorted(set(g)) and 15 <= len(g) <= 22


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("as") / "run"
    run_recipe("advani-saxe", make_config("advani-saxe", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


@pytest.mark.slow
def test_smoke_run_outputs(smoke):
    assert (smoke / "advani_saxe.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(smoke / "summary.json")
    assert [(r["d"], r["sigma0"]) for r in s["rows"]] == [
        (50, 0.0),
        (100, 0.0),
        (200, 0.0),
        (200, 0.5),
        (200, 1.0),
    ]
    for r in s["rows"]:
        # step 0: w0 = σ0 z, so the exact test error starts near σ0² + σw² + σε²
        assert r["theory_curve"][0] == pytest.approx(r["sigma0"] ** 2 + 1.25)
        assert r["mean_curve"][0] == pytest.approx(r["theory_curve"][0], rel=0.35)
        assert r["overtraining_mean"] >= 0
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c", "d-full", "d-random-features"]
    assert all(c["verdict"] != "not tested" for c in s["claims"])
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == [
        "linear-d00050",
        "linear-d00100",
        "linear-d00200",
        "relu-h00002",
        "relu-h00020",
    ]


@pytest.mark.slow
def test_resume_recomputes_a_lost_unit_identically(smoke, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(smoke, copy)
    (copy / "units" / "linear-d00100.json").unlink()
    (copy / "summary.json").unlink()
    torch.set_num_threads(1)
    run_recipe("advani-saxe", make_config("advani-saxe", smoke=True), out=copy)
    assert read_json(copy / "summary.json") == read_json(smoke / "summary.json")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"noise": -0.1}, "--noise"),
        ({"noise": 11.0}, "--noise"),
        ({"relu_noise": -1.0}, "--relu-noise"),
        ({"dims": "50,20"}, "--dims must be strictly increasing"),
        ({"widths": "5,5"}, "--widths must be strictly increasing"),
        ({"sigma0s": "1,0.5"}, "--sigma0s must be strictly increasing"),
        ({"sigma0s": "-1,0"}, "--sigma0s"),
        ({"sigma0_dim": 300}, "--sigma0-dim 300 is not one of --dims"),
        ({"eta": 0.0}, "--eta"),
    ],
)
def test_bad_input_is_one_line(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        AdvaniSaxeConfig(**kw)
    assert "\n" not in str(e.value)


def _rows(ot: dict[int, float], n: int = 100) -> list[dict]:
    rows = []
    for d, v in ot.items():
        rows.append(
            {
                "d": d,
                "alpha": n / d,
                "sigma0": 0.0,
                "n": 2,
                "diverged": [],
                "seeds": [0, 1],
                "overtraining_values": [v, v],
                "overtraining_mean": v,
                "min_values": [0.5, 0.5],
                "min_mean": 0.5,
                "final_mean": 0.3,
                "start_mean": 1.25,
                "max_rel_dev": 0.05,
                "max_rel_dev_step": 10,
            }
        )
    return rows


def _relu(values: dict[int, list[float]]) -> list[dict]:
    out = []
    for arm in ("full", "random_features"):
        for h, vs in values.items():
            out.append(
                {
                    "width": h,
                    "arm": arm,
                    "n": len(vs),
                    "test_values": dict(enumerate(vs)),
                    "test_mean": sum(vs) / len(vs),
                    "diverged": [],
                }
            )
    return out


def test_claim_logic_on_hand_made_rows():
    cfg = AdvaniSaxeConfig(dims="20,50,100,200,500", seeds=2, sigma0_dim=200)
    relu = _relu({2: [0.5, 0.6], 1000: [0.3, 0.35]})
    claims = {
        c.id: c
        for c in AdvaniSaxe.check_claims(
            cfg, _rows({20: 0.01, 50: 0.1, 100: 1.9, 200: 0.2, 500: 0.02}), relu
        )
    }
    assert claims["a"].held is True and claims["b"].held is True
    assert claims["d-full"].held is True
    # peak outside [80, 125]
    claims = {
        c.id: c
        for c in AdvaniSaxe.check_claims(
            cfg, _rows({20: 0.01, 50: 1.0, 100: 0.5, 200: 0.2, 500: 0.02}), relu
        )
    }
    assert claims["a"].held is False and "peaks at d=50" in claims["a"].detail
    # peak < 5x an end
    claims = {
        c.id: c
        for c in AdvaniSaxe.check_claims(
            cfg, _rows({20: 0.3, 50: 0.5, 100: 1.0, 200: 0.2, 500: 0.02}), relu
        )
    }
    assert claims["a"].held is False
    # the widest net worse than the best narrower one by more than 1 SE: (d) fails
    relu = _relu({2: [0.1, 0.12], 1000: [0.3, 0.35]})
    claims = {
        c.id: c for c in AdvaniSaxe.check_claims(cfg, _rows({20: 0.01, 100: 1.0, 500: 0.01}), relu)
    }
    assert claims["d-full"].held is False
    # (b) without α = 2 (d = 50): not tested; (c) with one σ0 row: not tested
    assert claims["b"].held is None and "α=2" in claims["b"].detail
    assert claims["c"].held is None
    # a diverged member at some d: (a) is not tested
    rows = _rows({20: 0.01, 50: 0.1, 100: 1.9, 200: 0.2, 500: 0.02})
    rows[2]["diverged"] = ["d=100 σ0=0 seed 1"]
    claims = {c.id: c for c in AdvaniSaxe.check_claims(cfg, rows, relu)}
    assert claims["a"].held is None and "diverged" in claims["a"].detail
    assert math.isfinite(claims["d-random-features"].evidence["se"])
