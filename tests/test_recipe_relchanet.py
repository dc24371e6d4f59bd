"""The relchanet recipe: smoke outputs, selections, wine, claims on hand-made numbers, bad
input."""

from __future__ import annotations

import json

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.relchanet import METHODS, RelChaNetRecipe, k_values
from weightlab.runs import read_json
from weightlab.sparsity.feature_selection import n_candidates

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rc") / "run"
    run_recipe("relchanet", make_config("relchanet", smoke=True), out=out)
    return out


def test_smoke_outputs_and_selections(smoke):
    s = read_json(smoke / "summary.json")
    assert [(r["k"], r["method"]) for r in s["rows"]] == [(16, m) for m in METHODS]
    assert all(r["n"] == 2 for r in s["rows"])
    assert s["features"] == 64 and (smoke / "accuracy_vs_k.png").exists()
    lines = {
        json.loads(x)["unit"]: json.loads(x)
        for x in (smoke / "metrics.jsonl").read_text().splitlines()
    }
    assert set(lines) == {"dense", "select-k0016", "downstream-k0016"}
    for m in lines["select-k0016"]["members"]:
        assert len(m["selected"]) == 16 == len(set(m["selected"]))
        assert m["updates"] == (39 * 3) // 20  # 39 steps per epoch at batch 32, 3 epochs
    down = lines["downstream-k0016"]["members"]
    var = {tuple(m["features"]) for m in down if m["method"] == "variance"}
    assert len(var) == 1  # the variance ranking does not depend on the seed
    rnd = {tuple(m["features"]) for m in down if m["method"] == "random"}
    assert len(rnd) == 2
    rel = {m["seed"]: m["features"] for m in down if m["method"] == "relchanet"}
    sel = {m["seed"]: m["selected"] for m in lines["select-k0016"]["members"]}
    assert rel == sel  # the downstream MLP reads RelChaNet's final selection


def test_k_values_auto_and_checks():
    cfg = make_config("relchanet")
    assert k_values(cfg, 64) == [8, 16, 32]
    assert k_values(make_config("relchanet", data="wine"), 13) == [2, 3, 6]
    with pytest.raises(ConfigError, match="--k-values 16 not in 1..12 for --data wine"):
        k_values(make_config("relchanet", data="wine", k_values="2,16"), 13)
    with pytest.raises(ConfigError, match="--k-values must be 'auto'"):
        k_values(make_config("relchanet", k_values="a,b"), 64)
    assert n_candidates(64, 16) == 10


def test_wine_runs_and_is_reported_only(tmp_path):
    cfg = make_config("relchanet", smoke=True, data="wine", k_values="auto", seeds=1)
    _, s = run_recipe("relchanet", cfg, out=tmp_path / "wine")
    assert sorted({r["k"] for r in s["rows"]}) == [2, 3, 6]
    assert s["claims"][0]["verdict"] == "not tested"
    assert "reported only" in s["claims"][0]["detail"]


def _rows(rel, rnd, var, mag=50.0, k=16):
    vals = {"relchanet": rel, "random": rnd, "variance": var, "magnitude": mag}
    return [
        {"k": k, "method": m, "test_acc_mean": v, "test_acc_values": [v], "diverged": []}
        for m, v in vals.items()
    ]


def test_claim_on_hand_made_numbers():
    dense = {"test_acc_mean": 95.0, "diverged": []}
    check = RelChaNetRecipe.check_claims
    assert check("digits", _rows(90.0, 89.0, 90.0), dense, 10.0)[0].held is True
    assert check("digits", _rows(90.0, 89.5, 85.0), dense, 10.0)[0].held is False  # < random + 1
    assert check("digits", _rows(90.0, 80.0, 90.5), dense, 10.0)[0].held is False  # < variance
    assert check("digits", _rows(90.0, 80.0, 85.0, k=8), dense, 10.0)[0].held is None
    low = {"test_acc_mean": 15.0, "diverged": []}
    assert check("digits", _rows(90.0, 80.0, 85.0), low, 10.0)[0].held is None
