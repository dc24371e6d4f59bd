"""The tas-search recipe: smoke outputs and determinism, the claim logic on hand-made
records (held, did not hold, the preconditions), and bad input."""

from __future__ import annotations

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.tas_search import FLOP_MATCH, TASSearch
from weightlab.runs import read_json
from weightlab.sparsity.tas import mlp_flops

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weightlab_cache):
    out = tmp_path_factory.mktemp("tas") / "run"
    run_recipe("tas-search", make_config("tas-search", smoke=True), out=out)
    return out


def test_smoke_outputs(smoke):
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == ["dense", "distill-s0", "distill-s1", "search-s0", "search-s1"]
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == ["dense", "searched", "uniform"]
    assert s["dense_flops"] == mlp_flops([40, 32, 32, 10])
    for p in s["per_seed"]:
        sw, uw = p["searched_widths"], p["uniform_widths"]
        assert sw[0] == uw[0] == 40 and sw[-1] == uw[-1] == 10
        assert set(sw[1:-1]) <= {8, 16, 24, 32}  # 25, 50, 75, 100% of 32
        assert uw[1] == uw[2]
        assert abs(p["uniform_flop_gap"]) <= FLOP_MATCH or uw[1] == 1
        assert p["searched_flop_ratio"] == pytest.approx(mlp_flops(sw) / s["dense_flops"])
        assert len(p["probs"]) == 2 and all(sum(r) == pytest.approx(1) for r in p["probs"])
    assert s["reduced_version"].startswith("reduced version: MLP 40-32-32-10 on mnist1d")
    assert "reduced version" in TASSearch.claim
    search = read_json(smoke / "units" / "search-s0.json")["metrics"]
    assert search["choices"] == [[8, 16, 24, 32], [8, 16, 24, 32]]
    assert (smoke / "tas_accuracy.png").stat().st_size > 1000


def test_smoke_is_deterministic(smoke, tmp_path):
    run_recipe("tas-search", make_config("tas-search", smoke=True), out=tmp_path / "again")
    assert (tmp_path / "again" / "summary.json").read_bytes() == (
        smoke / "summary.json"
    ).read_bytes()


def test_reduced_version_names_the_tasks_widths():
    cfg = make_config("tas-search", smoke=True, data="digits")
    s = TASSearch().summarize(
        cfg, {"dense": [], "search": [], "distill": []}, 10.0, 1.0, [64, 32, 32, 10]
    )
    assert s["reduced_version"].startswith("reduced version: MLP 64-32-32-10 on digits")
    assert s["reduced_version"] in TASSearch().tables(s)[0][0]


def _seed(i, dense, searched, uniform, gap=0.001, diverged=False):
    return {
        "seed": i,
        "dense": dense,
        "searched": searched,
        "uniform": uniform,
        "uniform_flop_gap": gap,
        "search_diverged": diverged,
    }


def _claim(rows):
    (c,) = TASSearch.check_claims(rows, chance=10.0)
    return c


def test_claim_holds_within_the_margin_and_fails_beyond():
    held = _claim([_seed(i, 62.0, 58.0 - 0.4, 58.0) for i in range(5)])
    assert held.held is True and held.evidence["mean_difference"] == pytest.approx(-0.4)
    failed = _claim([_seed(i, 62.0, 58.0 - 0.6, 58.0) for i in range(5)])
    assert failed.held is False and "-0.60 pts" in failed.detail


def test_claim_not_tested_when_pruning_costs_little():
    c = _claim([_seed(i, 58.5, 58.0, 58.0) for i in range(5)])
    assert c.held is None and "pruning costs too little" in c.detail


def test_claim_not_tested_on_unmatched_flops_divergence_or_a_dense_net_at_chance():
    rows = [_seed(i, 62.0, 59.0, 58.0) for i in range(5)]
    rows[2]["uniform_flop_gap"] = 0.05
    assert "uniform FLOPs differ" in _claim(rows).detail
    rows = [_seed(i, 62.0, 59.0, 58.0) for i in range(5)]
    rows[1]["uniform"] = None  # diverged student
    c = _claim(rows)
    assert c.held is None and "seed 1" in c.detail
    rows = [_seed(i, 15.0, 9.0, 8.0) for i in range(5)]
    assert "dense baseline did not learn" in _claim(rows).detail
    assert _claim([]).held is None


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--fractions must lie in"):
        make_config("tas-search", fractions="0.5,2")
    with pytest.raises(ConfigError, match="--hidden must be comma-separated"):
        make_config("tas-search", hidden="wide")
    with pytest.raises(ConfigError, match="--tau-min"):
        make_config("tas-search", tau_min=20.0)
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match="--batch-size 5000 exceeds"):
        run_recipe("tas-search", make_config("tas-search", batch_size=5000), out=out)
    with pytest.raises(ConfigError, match="same number of distinct candidates"):
        run_recipe("tas-search", make_config("tas-search", hidden="256,2"), out=out)
    assert not out.exists()
