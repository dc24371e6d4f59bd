"""Recipe gg-init (methods row [#24]): fits, claim logic, config checks."""

import pytest
import scipy.stats as st
import torch

from weightlab.errors import ConfigError
from weightlab.models.minilm import tiny_bert
from weightlab.recipes.init.gg_init import GGInit, GGInitConfig, bert_linear_weights, fit_matrix
from weightlab.seeding import generator


def test_tiny_bert_has_minilms_37_linear_weights():
    ws = bert_linear_weights(tiny_bert(0))
    assert len(ws) == 37 and all(w.dim() == 2 for w in ws.values())
    assert "pooler.dense.weight" in ws and not any("embeddings" in n for n in ws)


def test_heavy_tailed_matrix_prefers_gg_and_fit_is_held_out():
    lap = torch.from_numpy(st.laplace.rvs(scale=0.05, size=(200, 100), random_state=0))
    m = fit_matrix(lap, generator(0))
    assert m["beta"] == pytest.approx(1.0, rel=0.1)
    assert m["gg_wins"] and m["ll_gg"] > m["ll_gauss"]
    # the held-out half is the complement of the fit half: same split, same numbers
    assert fit_matrix(lap, generator(0)) == m
    two_point = torch.tensor([[-1.0, 1.0]] * 50)  # beta -> infinity: out of range, a loss
    m2 = fit_matrix(two_point, generator(0))
    assert not m2["beta_in_range"] and m2["ll_gg"] is None and not m2["gg_wins"]


def _mats(wins, n):
    return {f"m{i}": {"gg_wins": i < wins, "ll_gg": 1.0, "ll_gauss": 0.0} for i in range(n)}


def _rows(he, gg, diverged=()):
    return [
        {"arm": "he", "test_acc_mean": he, "excluded": list(diverged)},
        {"arm": "gg", "test_acc_mean": gg, "excluded": []},
    ]


def test_claims():
    a, b = GGInit.check_claims(_mats(19, 37), _rows(60.0, 59.5), chance=10.0)
    assert a.held is True and b.held is True
    a, b = GGInit.check_claims(_mats(18, 36), _rows(60.0, 58.9), chance=10.0)
    assert a.held is False and b.held is False  # exactly half is not "more than half"
    _, b = GGInit.check_claims(_mats(1, 2), _rows(15.0, 20.0), chance=10.0)
    assert b.held is None and "did not learn" in b.detail
    _, b = GGInit.check_claims(_mats(1, 2), _rows(60.0, 60.0, ["he seed 0"]), chance=10.0)
    assert b.held is None and "diverged" in b.detail


def test_config_errors():
    with pytest.raises(ConfigError, match="--model"):
        GGInitConfig(model="gpt")
    with pytest.raises(ConfigError, match="exceeds"):
        GGInit().validate(GGInitConfig(batch_size=10_000), {"train": 4000, "val": 1, "test": 1})
