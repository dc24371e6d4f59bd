"""Recipe ``hourglass`` (weightlab/recipes/growth/hourglass.py): task, grid, selection, claims."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.recipes.growth.hourglass import (
    Hourglass,
    HourglassConfig,
    config_key,
    denoising_task,
)
from weightlab.recipes.runner import make_config


def test_denoising_task_adds_seeded_noise_to_clean_targets():
    digits = load_dataset("digits", "cpu")
    task = denoising_task(digits, 0.3)
    assert task.kind == "regression" and task.output_shape == (64,)
    for name in ("train", "val", "test"):
        clean, split = getattr(digits, name), getattr(task, name)
        torch.testing.assert_close(split.y, clean.x)
        eps = (split.x - split.y) / 0.3
        bound = 4 / math.sqrt(eps.numel())  # 4 standard errors of the mean
        assert abs(float(eps.mean())) < bound and float(eps.std()) == pytest.approx(1, abs=0.03)
    again = denoising_task(digits, 0.3)
    torch.testing.assert_close(again.train.x, task.train.x, rtol=0, atol=0)
    noise = [(getattr(task, n).x - getattr(task, n).y)[:100] for n in ("train", "val", "test")]
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[1], noise[2])
    # the noisy input as a prediction scores σ² (the identity baseline)
    assert float(((task.test.x - task.test.y) ** 2).mean()) == pytest.approx(0.09, rel=0.05)


def test_default_grid_and_budgets_match_the_issue():
    grid = HourglassConfig().grid(64)
    conv = [c for c in grid if c["family"] == "conventional"]
    hg = [c for c in grid if c["family"] == "hourglass"]
    assert len(conv) == 9 and len(hg) == 12
    counts = {config_key(c): c["params"] for c in grid}
    assert counts["conv-L1-m64"] == 8448 and counts["conv-L4-m256"] == 132864
    assert counts["hg-L2-D128-b16"] == 25440 and counts["hg-L4-D256-b64"] == 167232
    within = {b: sorted(k for k, p in counts.items() if p <= b) for b in (35000, 70000, 140000)}
    assert [k for k in within[35000] if k.startswith("hg")] == [
        "hg-L2-D128-b16",
        "hg-L2-D128-b32",
        "hg-L4-D128-b16",
    ]
    assert "hg-L4-D256-b64" not in within[140000]  # the one config over every budget
    assert sum(k.startswith("conv") for k in within[140000]) == 9


def _row(key, family, params, val, test):
    return {
        "key": key,
        "family": family,
        "params": params,
        "val_mse_mean": val,
        "test_mse_mean": test,
    }


def test_choose_takes_the_lowest_validation_mse_within_each_budget():
    rows = [
        _row("c1", "conventional", 10, 0.03, 0.02),
        _row("c2", "conventional", 30, 0.02, 0.03),
        _row("h1", "hourglass", 20, 0.025, 0.01),
        _row("h2", "hourglass", 50, float("nan"), 0.01),
    ]
    got = Hourglass.choose(rows, [15, 35, 60])
    assert got == [
        {"budget": 15, "conventional": "c1", "hourglass": None},
        {"budget": 35, "conventional": "c2", "hourglass": "h1"},
        {"budget": 60, "conventional": "c2", "hourglass": "h1"},  # NaN validation never wins
    ]


def _summary(frozen, trained, low, conv, hg, seeds=3):
    """A summary built by ``summarize`` from hand-made member records (test MSEs)."""
    cfg = HourglassConfig(seeds=seeds, budgets="35000")
    rec = Hourglass()
    grid = [
        {"family": "conventional", "depth": 1, "width": 64, "bottleneck": None, "params": 8448},
        {"family": "hourglass", "depth": 2, "width": 128, "bottleneck": 16, "params": 25440},
    ]

    def members(arm, values, params):
        return [
            {
                "arm": arm,
                "seed": s,
                "params": params,
                "diverged": False,
                "val_mse": v,
                "test_mse": v,
                "test_r2": 0.5,
                "final_test_mse": v,
                "early_stop_step": 100,
                "last_step": 200,
            }
            for s, v in enumerate(values)
        ]

    records = {
        "conv-L1-m64": members("grid", conv, 8448),
        "hg-L2-D128-b16": members("grid", hg if hg is not None else frozen, 25440),
    }
    rows = [rec.config_row(c, records[config_key(c)], 0.1) for c in grid]
    choices = rec.choose(rows, [35000])
    lift = {"hg-L2-D128-b16": members("trained", trained, 25440) + members("low_rank", low, 25440)}
    return rec.summarize(cfg, rows, choices, records, lift, 0.1)


def _verdicts(summary):
    return {c["id"]: c["verdict"] for c in summary["claims"]}


def test_claims_on_hand_made_numbers():
    s = _summary(
        frozen=[0.0200, 0.0202, 0.0199],
        trained=[0.0199, 0.0201, 0.0200],
        low=[0.040, 0.043, 0.041],
        conv=[0.0210, 0.0205, 0.0212],
        hg=None,
    )
    assert _verdicts(s) == {"a": "held", "b": "held"}
    (lift,) = s["lift"]
    assert lift["frozen_excess"]["mean"] == pytest.approx(
        sum(
            f / t - 1
            for f, t in zip([0.0200, 0.0202, 0.0199], [0.0199, 0.0201, 0.0200], strict=True)
        )
        / 3
    )
    (comp,) = s["comparisons"]
    assert comp["seeds_hourglass_lower"] == 3 and comp["hourglass"] == "hg-L2-D128-b16"
    assert s["rows"][0]["pooled_r2_mean"] == pytest.approx(1 - comp["conventional_mean"] / 0.1)


def test_claim_a_needs_the_positive_control_to_differ():
    s = _summary(
        frozen=[0.0200, 0.0202, 0.0199],
        trained=[0.0199, 0.0201, 0.0200],
        low=[0.0200, 0.0203, 0.0201],  # the low-rank lift is just as good: a blind test
        conv=[0.0210, 0.0205, 0.0212],
        hg=None,
    )
    a = next(c for c in s["claims"] if c["id"] == "a")
    assert a["verdict"] == "did not hold"
    assert a["evidence"]["hg-L2-D128-b16"]["non_inferior"] is True
    assert a["evidence"]["hg-L2-D128-b16"]["control_differs"] is False


def test_claim_a_fails_when_the_frozen_lift_is_worse_and_b_needs_two_of_three_seeds():
    s = _summary(
        frozen=[0.0230, 0.0232, 0.0229],  # ~15% above the trained lift
        trained=[0.0199, 0.0201, 0.0200],
        low=[0.040, 0.043, 0.041],
        conv=[0.0220, 0.0240, 0.0239],  # mean 0.02330 > HG mean 0.02303, HG lower in 2 of 3
        hg=None,
    )
    assert _verdicts(s) == {"a": "did not hold", "b": "held"}
    s = _summary(
        frozen=[0.0230, 0.0232, 0.0229],
        trained=[0.0199, 0.0201, 0.0200],
        low=[0.040, 0.043, 0.041],
        conv=[0.0200, 0.0231, 0.0300],  # mean lower for HG, but HG lower in 1 of 3 seeds
        hg=None,
    )
    b = next(c for c in s["claims"] if c["id"] == "b")
    assert b["verdict"] == "did not hold" and "lower in 1/3 seeds" in b["detail"]


def test_unlearned_baselines_leave_claims_untested():
    bad = [0.2, 0.21, 0.19]  # above the test variance 0.1: pooled R² < 0
    s = _summary(frozen=bad, trained=bad, low=bad, conv=bad, hg=None)
    assert _verdicts(s) == {"a": "not tested", "b": "not tested"}
    one = _summary(frozen=[0.02], trained=[0.02], low=[0.04], conv=[0.03], hg=None, seeds=1)
    assert _verdicts(one)["a"] == "not tested"


@pytest.mark.parametrize(
    "overrides",
    [
        {"budgets": "35k"},
        {"conv_widths": "64,64"},
        {"hg_depths": "0,2"},
        {"control_rank": 200},
        {"noise": 0.0},
    ],
)
def test_bad_config_is_one_line_config_error(overrides):
    with pytest.raises(ConfigError) as e:
        make_config("hourglass", **overrides)
    assert "\n" not in str(e.value)


def test_validate_refuses_a_batch_larger_than_the_train_split():
    rec = Hourglass()
    with pytest.raises(ConfigError, match="batch-size"):
        rec.validate(HourglassConfig(batch_size=5000), {"train": 1257, "val": 180, "test": 360})
    assert math.isfinite(HourglassConfig().lr)
