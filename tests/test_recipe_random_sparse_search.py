"""Random node-mask search (weightlab.sparsity.node_search) and the random-sparse-search
recipe: node masks against a hand-built smaller MLP, ranking, smoke run, claim logic."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.core.mask import apply_masks
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models.factory import build, model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.random_sparse_search import (
    CONTROL_PTS,
    MARGIN_PTS,
    RandomSparseSearch,
)
from weightlab.seeding import generator
from weightlab.sparsity.node_search import (
    best_candidate,
    node_keep_counts,
    node_masks,
    proxy_scores,
    random_node_keep,
)
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTHS = [6, 10, 5, 3]


def test_keep_counts_floor_and_refuse_empty_layers():
    assert node_keep_counts([40, 300, 100, 10], 0.5) == [150, 50]
    assert node_keep_counts([40, 300, 100, 10], 0.9) == [30, 10]
    assert node_keep_counts([40, 300, 100, 10], 0.8) == [60, 20]
    with pytest.raises(ConfigError, match="keeps no unit"):
        node_keep_counts([4, 5, 3], 0.9)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        node_keep_counts([4, 5, 3], 1.0)


def test_node_masks_equal_the_smaller_mlp():
    keep = random_node_keep(WIDTHS, 0.4, generator(0))
    assert [int(k.sum()) for k in keep] == [6, 3]
    model = build(MLP, WIDTHS, seed=1)
    small = build(MLP, [6, 6, 3, 3], seed=2)
    with torch.no_grad():
        i0, i1 = keep[0].nonzero().flatten(), keep[1].nonzero().flatten()
        small.layers[0].weight.copy_(model.layers[0].weight[i0])
        small.layers[0].bias.copy_(model.layers[0].bias[i0])
        small.layers[1].weight.copy_(model.layers[1].weight[i1][:, i0])
        small.layers[1].bias.copy_(model.layers[1].bias[i1])
        small.layers[2].weight.copy_(model.layers[2].weight[:, i1])
        small.layers[2].bias.copy_(model.layers[2].bias)
    masks = node_masks(WIDTHS, keep)
    assert int(masks["layers.1.weight"].sum()) == 6 * 3
    apply_masks(model, masks)
    x = torch.randn(7, 6, generator=generator(3))
    torch.testing.assert_close(model(x), small(x), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="one bool vector per hidden layer"):
        node_masks(WIDTHS, keep[:1])


def test_random_node_keep_is_seeded():
    a = random_node_keep(WIDTHS, 0.5, generator(5))
    b = random_node_keep(WIDTHS, 0.5, generator(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_best_candidate_ranks_by_proxy_val_loss():
    s = [
        {"val_loss": 0.9, "diverged": False},
        {"val_loss": 0.5, "diverged": False},
        {"val_loss": 0.1, "diverged": True},
        {"val_loss": math.nan, "diverged": False},
        {"val_loss": 0.5, "diverged": False},
    ]
    assert best_candidate(s) == 1
    with pytest.raises(ConfigError):
        best_candidate([])


def test_proxy_scores_trains_each_candidate_from_one_init(weightlab_cache):
    data = load_dataset("iris", "cpu")
    widths = [4, 8, 3]
    factory = model_factory(MLP, widths)
    cands = [node_masks(widths, random_node_keep(widths, 0.5, generator(i))) for i in range(3)]
    cands.append(node_masks(widths, [torch.zeros(8, dtype=torch.bool) | (torch.arange(8) < 1)]))
    cfg = TrainConfig(3, 30, 0, OptimConfig("adam", lr=1e-2))
    scores = proxy_scores(factory, cands, data, cfg, seed=0, data_seed=0)
    assert len(scores) == 4 and all(math.isfinite(s["val_loss"]) for s in scores)
    again = proxy_scores(factory, cands, data, cfg, seed=0, data_seed=0)
    assert scores == again


def test_smoke_run(tmp_path, weightlab_cache):
    path, summary = run_recipe(
        "random-sparse-search", make_config("random-sparse-search", smoke=True), out=tmp_path / "r"
    )
    assert summary["members"] == 2 * (1 + 2 * 3)
    arms = [(r["arm"], r["sparsity"]) for r in summary["rows"]]
    assert arms[0] == ("dense", 0.0) and len(arms) == 7
    assert [x["sparsity"] for x in summary["search"]] == [0.5, 0.8, 0.9]
    assert all(0 <= i < 4 for x in summary["search"] for i in x["best_index"])
    units = sorted(p.name for p in (path / "units").glob("*.json"))
    assert units == ["final.json", "search-00.json", "search-01.json"]
    before = (path / "summary.json").read_bytes()
    run_recipe("random-sparse-search", make_config("random-sparse-search", smoke=True), out=path)
    assert (path / "summary.json").read_bytes() == before


def test_bad_config():
    with pytest.raises(ConfigError, match="--sparsities"):
        make_config("random-sparse-search", sparsities="0.5,1.2")
    with pytest.raises(ConfigError, match="keeps no unit"):
        make_config("random-sparse-search", hidden="4,4", sparsities="0.5,0.9")


def _rows(best, random, dense=60.0, diverged=()):
    rows = [{"arm": "dense", "sparsity": 0.0, "test_acc_mean": dense, "diverged": []}]
    for sp in (0.5, 0.8, 0.9):
        for arm, vals in (("best", best[sp]), ("random", random[sp])):
            rows.append(
                {
                    "arm": arm,
                    "sparsity": sp,
                    "test_acc_mean": sum(vals) / len(vals),
                    "test_acc_values": list(vals),
                    "seeds": list(range(len(vals))),
                    "early_stop_mean": 100.0,
                    "diverged": [
                        d for d in diverged if d.startswith(f"{arm} ") and f"{sp:.0%}" in d
                    ],
                }
            )
    return rows


RANDOM = {0.5: [60, 61, 59, 60, 62], 0.8: [57, 58, 56, 57, 58], 0.9: [50, 52, 51, 50, 49]}


def _verdict(best, random=RANDOM, **kw):
    (c,) = RandomSparseSearch.check_claims(_rows(best, random, **kw), chance=10.0)
    return c


def test_claim_holds_when_every_paired_ci_is_inside_the_margin():
    best = {
        sp: [v + d for v, d in zip(vals, [0.2, -0.1, 0.1, 0.0, 0.1], strict=True)]
        for sp, vals in RANDOM.items()
    }
    c = _verdict(best)
    assert c.verdict == "held", c.detail
    assert c.evidence["control_ok"] and c.evidence["control_pts"] > CONTROL_PTS


def test_claim_fails_when_one_sparsity_is_outside_or_noisy():
    best = {sp: list(vals) for sp, vals in RANDOM.items()}
    best[0.9] = [v + MARGIN_PTS + 0.5 for v in RANDOM[0.9]]  # consistently better
    assert _verdict(best).verdict == "did not hold"
    best[0.9] = [v + d for v, d in zip(RANDOM[0.9], [3, -3, 2, -2, 0], strict=True)]  # wide CI
    assert _verdict(best).verdict == "did not hold"


def test_claim_needs_the_positive_control():
    flat = {sp: [55, 56, 55, 56, 55] for sp in RANDOM}
    c = _verdict(flat, random=flat)
    assert c.verdict == "did not hold" and "positive control" in c.detail.lower()


def test_claim_not_tested_without_learning_or_with_divergence():
    best = {sp: list(v) for sp, v in RANDOM.items()}
    assert _verdict(best, dense=12.0).verdict == "not tested"
    assert _verdict(best, diverged=["best seed 1 at 90%"]).verdict == "not tested"
