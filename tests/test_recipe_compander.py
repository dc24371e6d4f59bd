"""Recipe ``compander``: the training subset, claim logic and bad input."""

import pytest

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.recipes.init.compander import CompanderRecipe, subset_train
from weightlab.recipes.runner import make_config, run_recipe


def _row(arm, acc, excluded=()):
    return {"arm": arm, "test_acc_mean": acc, "near_zero_pct_mean": 1.0, "excluded": list(excluded)}


def test_claim_logic():
    assert CompanderRecipe.check_claims([_row("wd", 80), _row("wd+wc", 80)], 10)[0].held is True
    assert CompanderRecipe.check_claims([_row("wd", 80), _row("wd+wc", 79.9)], 10)[0].held is False
    low = CompanderRecipe.check_claims([_row("wd", 15), _row("wd+wc", 90)], 10)[0]
    assert low.held is None and "did not learn" in low.detail


def test_subset_keeps_val_and_test():
    d = load_dataset("digits")
    s = subset_train(d, 300)
    assert len(s.train) == 300 and s.val is d.val and s.test is d.test
    assert (s.train.x == d.train.x[:300]).all()


def test_bad_input_writes_nothing(tmp_path):
    cfg = make_config("compander", n_train=5000)
    with pytest.raises(ConfigError, match="--n-train 5000 exceeds"):
        run_recipe("compander", cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
