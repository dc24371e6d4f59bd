"""The random-feature-attention recipe: the task and targets, the ridge path on a hand case, a
smoke run with resume, the claim logic on hand-made rows, and bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.random_feature_attention import (
    RandomFeatureAttentionRecipe,
    kernel_ridge_path,
    sphere_tokens,
    target,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "random-feature-attention"


def test_tokens_and_targets():
    x = sphere_tokens(5, 3, 4, torch.Generator().manual_seed(0))
    assert x.shape == (5, 4, 4) and torch.allclose(x.norm(dim=-1), torch.ones(5, 4, dtype=x.dtype))
    hand = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # d = 2, N = 3
    r2 = math.sqrt(2)
    assert float(target(hand, "relu")) == pytest.approx(r2 / 3)
    assert float(target(hand, "cube")) == pytest.approx((r2**3 - r2**3) / 3)
    # invariant to the keys' order
    perm = x[:, [0, 2, 3, 1]]
    assert torch.allclose(target(x, "cube"), target(perm, "cube"))


def test_kernel_ridge_path_interpolates_a_linear_target():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    ft = torch.randn(30, 5, generator=g, dtype=torch.float64)
    fits = kernel_ridge_path(
        f[:20] @ f[:20].T, (f @ w)[:20], f[20:] @ f[:20].T, (f @ w)[20:], ft @ f[:20].T, ft @ w
    )
    assert len(fits) == 2
    for err, ridge in fits:
        assert err < 1e-6 and ridge == 1e-8  # the smallest ridge wins on a noiseless target


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rfa") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run_recipe(NAME, make_config(NAME, smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_and_resume(smoke, tmp_path):
    s = read_json(smoke / "summary.json")
    assert {(r["target"], r["model"]) for r in s["rows"]} == {
        (t, m) for t in ("relu", "cube") for m in ("rfa-zero", "rfa-mean", "rf-mlp")
    }
    assert [c["id"] for c in s["claims"]] == ["a-relu", "b-relu", "a-cube", "b-cube"]
    assert s["claims"][0]["verdict"] == "not tested"  # 3 sizes, the claim needs 4
    assert (smoke / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe(NAME, make_config(NAME, smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def _rows(zero, mean, mlp):
    rows = []
    for t in ("relu", "cube"):
        for model, table in (("rfa-zero", zero), ("rfa-mean", mean), ("rf-mlp", mlp)):
            for n, vals in zip((100, 300, 1000, 3000), table, strict=True):
                rows.append(
                    {
                        "target": t,
                        "model": model,
                        "n": n,
                        "mean": sum(vals) / len(vals),
                        "values": vals,
                    }
                )
    return rows


def test_claim_logic():
    zero = [[0.5, 0.6, 0.55], [0.3, 0.3, 0.3], [0.1, 0.12, 0.11], [0.05, 0.06, 0.055]]
    mean = [[0.4, 0.4, 0.4], [0.2, 0.2, 0.2], [0.05, 0.05, 0.05], [0.02, 0.03, 0.025]]
    mlp = [[1.0, 1.0, 1.0], [0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [0.01, 0.01, 0.01]]
    c = {x.id: x for x in RandomFeatureAttentionRecipe.check_claims(_rows(zero, mean, mlp))}
    assert c["a-relu"].verdict == "held" and c["a-relu"].evidence["wins"] == 3
    assert c["b-relu"].verdict == "held"
    # non-zero mean better on average but within one standard error
    noisy = [[0.4] * 3, [0.2] * 3, [0.05] * 3, [0.01, 0.1, 0.05]]
    c = {x.id: x for x in RandomFeatureAttentionRecipe.check_claims(_rows(zero, noisy, mlp))}
    assert c["b-cube"].verdict == "did not hold"
    worse = [[0.1] * 3] * 4
    c = {x.id: x for x in RandomFeatureAttentionRecipe.check_claims(_rows(zero, mean, worse))}
    assert c["a-relu"].verdict == "did not hold"
    unlearned = [[1.0] * 3] * 4
    c = {x.id: x for x in RandomFeatureAttentionRecipe.check_claims(_rows(unlearned, mean, mlp))}
    assert {v.verdict for v in c.values()} == {"not tested"}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"heads": 0}, "heads"),
        ({"sizes": "100,x"}, "sizes"),
        ({"d": 0}, "--d"),
        ({"qk_mean": 0.0}, "qk-mean"),
        ({"data": "digits"}, "data"),
    ],
)
def test_bad_config_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, smoke=True, **override)
    assert "\n" not in str(e.value)
