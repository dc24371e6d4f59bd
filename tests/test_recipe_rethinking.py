"""Scratch-E / Scratch-B budgets and the rethinking-pruning recipe: smoke run end to end,
resume, the claim checks on hand-made numbers, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.population import MemberSpec
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.rethinking_pruning import RethinkingPruning
from weightlab.sparsity.scratch import (
    architecture_factory,
    flop_ratio,
    mlp_forward_flops,
    scratch_budget,
    train_from_scratch,
)
from weightlab.sparsity.structured import count_flops, prune_structured
from weightlab.train import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scratch_b_budget_on_the_recipes_mlp():
    large = build(MLP, [40, 512, 512, 10], seed=0)
    small = prune_structured(large, 0.75).model
    assert small.widths == [40, 128, 128, 10]
    x = torch.zeros(1, 40)
    # the analytic count is FlopCounterMode's count
    assert mlp_forward_flops(large.widths) == count_flops(large, x) == 2 * 287744
    assert mlp_forward_flops(small.widths) == count_flops(small, x) == 2 * 22784
    ratio = flop_ratio(large, small, x)
    assert ratio == pytest.approx(287744 / 22784) and 12.6 < ratio < 12.65
    assert scratch_budget("B", 60, ratio).epochs == 758  # 60 · 12.63 = 757.8, uncapped
    assert scratch_budget("E", 60, ratio).epochs == 60
    half = mlp_forward_flops([40, 512, 512, 10]) / mlp_forward_flops([40, 256, 256, 10])
    assert scratch_budget("B", 60, half).epochs == round(60 * 287744 / 78336) == 220
    with pytest.raises(ConfigError, match="unknown scratch budget"):
        scratch_budget("C", 60)


def test_train_from_scratch_uses_fresh_weights_and_the_budget():
    data = load_dataset("iris", "cpu")
    large = build(MLP, [4, 16, 3], seed=0)
    small = prune_structured(large, 0.5).model
    factory = architecture_factory(small)
    fresh = factory(3)
    assert fresh.widths == [4, 8, 3]
    assert not torch.equal(fresh.layers[0].weight, small.layers[0].weight)
    cfg = TrainConfig(2, 30, 0, OptimConfig("sgd", lr=0.1, momentum=0.9))
    budget = scratch_budget("B", 2, 2.0)
    results, finals = train_from_scratch(small, budget, data, cfg, [MemberSpec(seed=1)])
    assert results[0].history[-1].epoch == pytest.approx(4.0)
    assert finals[0]["layers.0.weight"].shape == (8, 4)
    with pytest.raises(ConfigError, match="fresh weights"):
        train_from_scratch(small, budget, data, cfg, [MemberSpec(seed=1, init_state={})])
    with pytest.raises(ConfigError, match="no architecture factory"):
        architecture_factory(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rethinking") / "run"
    cfg = make_config("rethinking-pruning", smoke=True)
    path, summary = run_recipe("rethinking-pruning", cfg, out=out)
    return cfg, path, summary


@pytest.mark.slow
def test_smoke_run_outputs_and_resume(smoke):
    cfg, path, summary = smoke
    ids = [c["id"] for c in summary["claims"]]
    assert ids == ["control-a", "scratch-b", "scratch-e", "control-b", "lth"]
    assert all(c["verdict"] in {"held", "did not hold", "not tested"} for c in summary["claims"])
    rows = {(r["arm"], r["ratio"]): r for r in summary["rows_a"]}
    # smoke: 40-32-32-10, 75% pruned -> 40-8-8-10, Scratch-B = round(1 · 2624 / 464) = 6 epochs
    assert rows[("scratch-B", 0.75)]["epochs"] == 6
    assert rows[("scratch-E", 0.75)]["epochs"] == cfg.epochs
    assert rows[("finetuned", 0.5)]["epochs"] == cfg.finetune_epochs
    dens = sorted({round(r["density"], 4) for r in summary["rows_b"]}, reverse=True)
    assert dens == pytest.approx([1.0, 0.8, 0.64], abs=1e-3)  # 20% of each layer per round
    assert (path / "report.md").exists() or (path / "report.html").exists()
    floor = summary["chance_pct"] + 10.0
    assert all(m["test_acc"] >= floor > m["final_test_acc"] for m in summary["collapsed_late"])
    again_path, again = run_recipe("rethinking-pruning", cfg, out=path)
    assert again["claims"] == summary["claims"]


def _rows(ft, se, sb, ctl_ft=60.0, ctl_se=50.0):
    """Part A rows; ``ft``, ``se``, ``sb``: test accuracy at early stop (the claims' measure).
    The final accuracy is set to chance (as after a late collapse): the claims must not read it."""

    def row(arm, ratio, acc, ctl):
        return {
            "arm": arm,
            "ratio": ratio,
            "test_acc_mean": acc,
            "final_test_acc_mean": 10.0,
            "control_acc_mean": ctl,
            "excluded": [],
        }

    out = [row("dense", 0.0, 70.0, 40.0)]
    for q in (0.5, 0.75):
        out += [
            row("finetuned", q, ft, ctl_ft),
            row("scratch-E", q, se, ctl_se),
            row("scratch-B", q, sb, ctl_se),
        ]
    return out


def _rows_b(hi_diffs, lo_diffs):
    rows = []
    for lr, diffs in ((0.1, hi_diffs), (0.01, lo_diffs)):
        rows.append(
            {
                "lr": lr,
                "round": 0,
                "arm": "ticket",
                "density": 1.0,
                "test_acc_mean": 70.0,
                "test_acc_values": [70.0] * 3,
                "early_stop_mean": 500.0,
                "last_step": 1740,
                "seeds": [0, 1, 2],
                "excluded": [],
            }
        )
        for r, dens, d in zip((3, 7, 11), (0.512, 0.21, 0.086), diffs, strict=True):
            for arm, vals in (("ticket", [65 + x for x in d]), ("reinit", [65.0] * 3)):
                rows.append(
                    {
                        "lr": lr,
                        "round": r,
                        "arm": arm,
                        "density": dens,
                        "test_acc_mean": sum(vals) / 3,
                        "test_acc_values": vals,
                        "seeds": [0, 1, 2],
                        "excluded": [],
                    }
                )
    return rows


def _verdicts(rows_a, rows_b):
    cfg = make_config("rethinking-pruning")
    return {c.id: c.verdict for c in RethinkingPruning.check_claims(cfg, rows_a, rows_b, 10.0)}


def test_claim_thresholds_on_hand_made_numbers():
    near = [[0.1, -0.1, 0.0]] * 3  # CI well inside ±1
    win = [[0.0, 0.1, -0.1], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]]
    v = _verdicts(_rows(60.0, 59.5, 60.5), _rows_b(near, win))
    assert v == {
        "control-a": "held",
        "scratch-b": "held",
        "scratch-e": "held",
        "control-b": "held",
        "lth": "held",
    }
    v = _verdicts(_rows(60.0, 58.9, 59.0), _rows_b([[0.5, 1.5, 1.0]] * 3, win))
    assert v["scratch-e"] == "did not hold" and v["scratch-b"] == "held"  # -1.1 vs -1.0
    assert v["lth"] == "did not hold"  # mean +1.0: the CI reaches past +1
    # the positive controls fail -> the claims they guard are not tested
    v = _verdicts(_rows(60.0, 60.0, 60.0, ctl_ft=50.5), _rows_b(near, near))
    assert v["control-a"] == "did not hold" and v["scratch-b"] == "not tested"
    assert v["control-b"] == "did not hold" and v["lth"] == "not tested"
    # a dense baseline at chance: nothing is tested
    rows = _rows(60.0, 60.0, 60.0)
    rows[0]["test_acc_mean"] = 12.0
    assert _verdicts(rows, _rows_b(near, win))["scratch-b"] == "not tested"
    assert math.isfinite(rows[1]["test_acc_mean"])
    # part B's dense run still improving at its last evaluation: part B not tested
    rows_b = _rows_b(near, win)
    rows_b[0]["early_stop_mean"] = 1740.0
    v = _verdicts(_rows(60.0, 60.0, 60.0), rows_b)
    assert v["lth"] == "not tested" and v["control-b"] == "not tested"


def test_members_that_collapsed_late_are_listed():
    def member(arm, seed, early, final, diverged=False):
        return {
            "part": "A",
            "arm": arm,
            "ratio": 0.75,
            "seed": seed,
            "test_acc": early,
            "final_test_acc": final,
            "diverged": diverged,
        }

    members = [
        member("scratch-B", 0, 61.9, 12.2),  # collapsed late (chance 10 + 10 = 20)
        member("scratch-B", 1, 59.0, 20.0),  # final exactly at the floor: not collapsed
        member("scratch-B", 2, 19.9, 12.5),  # never above the floor: did not learn, not late
        member("scratch-E", 0, 62.5, None),  # no finite final accuracy
        member("finetuned", 0, 65.5, 5.0, diverged=True),  # diverged: reported as such
    ]
    late = RethinkingPruning().collapsed_late(members, 10.0)
    assert late == [
        {"member": "scratch-B at 75% pruned seed 0", "test_acc": 61.9, "final_test_acc": 12.2}
    ]
    summary = {"chance_pct": 10.0, "collapsed_late": late, "control_epochs": 2}
    summary["rows_a"], summary["rows_b"] = [], []
    title, header, rows = RethinkingPruning().tables(summary)[-1]
    assert "collapsed late" in title and "20.0%" in title
    assert rows == [["scratch-B at 75% pruned seed 0", "61.9", "12.2"]]


def test_bad_input_is_one_line_config_error():
    with pytest.raises(ConfigError, match="distinct numbers in") as e:
        make_config("rethinking-pruning", ratios="0.5,1.5")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="lth-report"):
        make_config("rethinking-pruning", lth_report="3,12")
    cfg = make_config("rethinking-pruning", smoke=True, hidden="3,3", ratios="0.75")
    with pytest.raises(ConfigError, match="would remove all 3 units"):
        RethinkingPruning().validate(cfg, {"train": 3500, "val": 500, "test": 1000})
