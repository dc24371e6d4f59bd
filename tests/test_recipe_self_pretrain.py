"""The self-pretrain recipe: per-seed gaps, claim logic on hand-made rows, bad input, smoke."""

from __future__ import annotations

import math

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.init.self_pretrain import SelfPretrain, _parse_archs
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _row(arch, arm, values, excluded=()):
    m = sum(values) / len(values)
    return {
        "arch": arch,
        "arm": arm,
        "test_acc_mean": m,
        "test_acc_std": 1.0,
        "test_acc_values": list(values),
        "excluded": list(excluded),
        "n": len(values),
    }


def _rows(t_a, c_a, t_b, c_b):
    return [
        _row("transformer", "random", t_a),
        _row("transformer", "pretrained", t_b),
        _row("cnn", "random", c_a),
        _row("cnn", "pretrained", c_b),
    ]


def test_gaps_are_per_seed_best_minus_worst():
    rows = _rows([50, 60, 55], [90, 80, 85], [80, 85, 70], [88, 84, 86])
    assert SelfPretrain.gaps(rows, "random") == [40, 20, 30]
    assert SelfPretrain.gaps(rows, "pretrained") == [8, 1, 16]


def test_claims_hold_when_the_gap_shrinks_and_the_transformer_gains_most():
    rows = _rows([50, 60, 55], [90, 80, 85], [80, 85, 70], [88, 84, 86])
    gap, gain = SelfPretrain.check_claims(rows, chance=10.0, seeds=3)
    assert gap.verdict == "held"
    diffs = [32, 19, 14]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert gap.evidence["difference_mean"] == pytest.approx(mean)
    assert gap.evidence["difference_se"] == pytest.approx(sd / math.sqrt(3))
    assert gain.verdict == "held"
    assert gain.evidence["gain_mean"]["transformer"] == pytest.approx(70 / 3)
    assert gain.evidence["gain_mean"]["cnn"] == pytest.approx(1.0)


def test_claims_fail_when_the_gap_does_not_shrink_beyond_one_se():
    # the gap shrinks by 0, 10, -10 pts: mean 0 < SE
    rows = _rows([50, 60, 55], [90, 80, 85], [50, 50, 65], [90, 80, 85])
    gap, gain = SelfPretrain.check_claims(rows, chance=10.0, seeds=3)
    assert gap.verdict == "did not hold"
    rows = _rows([50, 60, 55], [90, 80, 85], [51, 60, 55], [95, 85, 90])  # CNN gains most
    assert SelfPretrain.check_claims(rows, chance=10.0, seeds=3)[1].verdict == "did not hold"


def test_preconditions_make_claims_not_tested():
    rows = _rows([25, 28, 26], [90, 80, 85], [80, 85, 70], [88, 84, 86])  # T < chance + 20
    gap, gain = SelfPretrain.check_claims(rows, chance=10.0, seeds=3)
    assert gap.verdict == gain.verdict == "not tested" and "did not learn" in gap.detail
    rows = _rows([50, 60, 55], [90, 80, 85], [80, 85, 70], [88, 84, 86])
    rows[1]["excluded"] = ["transformer pretrained seed 1"]
    assert all(c.verdict == "not tested" for c in SelfPretrain.check_claims(rows, 10.0, 3))
    one = _rows([50], [90], [80], [88])
    gap, gain = SelfPretrain.check_claims(one, chance=10.0, seeds=1)
    assert gap.verdict == "not tested" and gain.verdict == "held"
    no_t = [
        _row("cnn", "random", [80]),
        _row("cnn", "pretrained", [81]),
        _row("gru", "random", [70]),
        _row("gru", "pretrained", [75]),
    ]
    assert SelfPretrain.check_claims(no_t, 10.0, 1)[1].verdict == "not tested"


@pytest.mark.parametrize("text", ["transformer", "transformer,lstm", "cnn,cnn", ""])
def test_bad_archs_are_config_errors(text):
    with pytest.raises(ConfigError, match="--archs"):
        _parse_archs(text)


def test_validate_refuses_a_batch_larger_than_the_data_and_a_mask_of_no_token():
    recipe = SelfPretrain()
    cfg = make_config("self-pretrain", n_train=64, batch_size=128)
    with pytest.raises(ConfigError, match="batch-size"):
        recipe.validate(cfg, {"train": 3500, "val": 500, "test": 1000})
    with pytest.raises(ConfigError, match="n-train"):
        recipe.validate(
            make_config("self-pretrain", n_train=4000),
            {"train": 3500, "val": 500, "test": 1000},
        )
    with pytest.raises(ConfigError, match="mask-fraction"):  # 0.01 of 40 tokens masks none
        recipe.validate(
            make_config("self-pretrain", mask_fraction=0.01),
            {"train": 3500, "val": 500, "test": 1000},
        )


@pytest.mark.slow  # a few seconds on a loaded 2-core machine; conformance also runs it
def test_smoke_run(tmp_path):
    cfg = make_config("self-pretrain", smoke=True)
    _, summary = run_recipe("self-pretrain", cfg, out=tmp_path / "run")
    assert [(r["arch"], r["arm"]) for r in summary["rows"]] == [
        ("transformer", "random"),
        ("transformer", "pretrained"),
        ("cnn", "random"),
        ("cnn", "pretrained"),
    ]
    assert summary["params"] == {"transformer": 18528, "cnn": 19944}
    assert [c["id"] for c in summary["claims"]] == ["gap", "transformer-gains-most"]
    assert all(len(r["val_loss_mean"]) == 1 for r in summary["pretraining"])
