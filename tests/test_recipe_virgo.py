"""Recipe ``virgo``: claim logic on hand-made rows, and bad input."""

import pytest

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.recipes.init.virgo import VirgoConfig, VirgoRecipe


def _row(arm, fwd, bwd, acc, excluded=()):
    return {
        "arm": arm,
        "fwd_score_mean": fwd,
        "bwd_score_mean": bwd,
        "test_acc_mean": acc,
        "excluded": list(excluded),
    }


def _verdicts(rows, chance=25.0):
    return [c.verdict for c in VirgoRecipe.check_claims(rows, chance)]


def test_claims_hold_fail_and_are_not_tested():
    good = [_row("xavier", 0.9, 2.0, 60.0), _row("virgo", 0.2, 1.0, 59.5)]
    assert _verdicts(good) == ["held", "held"]
    # backward worse, accuracy 1.5 pts lower
    bad = [_row("xavier", 0.9, 1.0, 60.0), _row("virgo", 0.2, 1.2, 58.5)]
    assert _verdicts(bad) == ["did not hold", "did not hold"]
    # the Xavier GCN did not learn: nothing is judged
    flat = [_row("xavier", 0.9, 2.0, 30.0), _row("virgo", 0.2, 1.0, 60.0)]
    assert _verdicts(flat) == ["not tested", "not tested"]
    div = [_row("xavier", 0.9, 2.0, 60.0), _row("virgo", 0.2, 1.0, 60.0, ["virgo seed 1"])]
    assert _verdicts(div) == ["not tested", "not tested"]


def test_non_graph_data_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="carries no graph"):
        VirgoRecipe()._graph(load_dataset("iris"))
    with pytest.raises(ConfigError, match="--depth"):
        VirgoConfig(depth=1)
