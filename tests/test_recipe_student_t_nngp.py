"""The student-t-nngp recipe: its data, the claim logic on hand-made rows, bad input, smoke."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.student_t_nngp import StudentTNNGP, make_data
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_data_is_shifted_and_seeded():
    x, y, xt, yt = make_data(0, 50, 20, 0.1)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert float(xt.min()) >= 1 and float(xt.max()) <= 3
    assert float((y - torch.sin(3 * x[:, 0])).std()) == pytest.approx(0.1, rel=0.3)
    assert torch.equal(make_data(0, 50, 20, 0.1)[1], y)
    assert not torch.equal(make_data(1, 50, 20, 0.1)[1], y)


def _rec(gp_nll, t_nll, r2=0.9):
    def m(nll):
        return {"test_nll": nll, "log_marginal": 1.0, "train_r2": r2, "test_mse": 1.0}

    return {"gp": m(gp_nll), "t": m(t_nll)}


def _rows(records):
    from weightlab.recipes.stats import mean_std

    out = {}
    for k in ("gp", "t"):
        n = mean_std([r[k]["test_nll"] for r in records])
        r2 = mean_std([r[k]["train_r2"] for r in records])
        out[k] = {"test_nll_mean": n[0], "test_nll_std": n[1], "train_r2_mean": r2[0]}
    return out


def test_claim_logic():
    recs = [_rec(2.0, 1.5), _rec(2.0, 2.1)]
    (c,) = StudentTNNGP.check_claims(recs, _rows(recs))
    assert c.verdict == "held" and "1/2 seeds" in c.detail
    recs = [_rec(1.0, 1.5), _rec(1.0, 1.1)]
    assert StudentTNNGP.check_claims(recs, _rows(recs))[0].verdict == "did not hold"
    recs = [_rec(2.0, 1.5, r2=0.0)]
    assert StudentTNNGP.check_claims(recs, _rows(recs))[0].verdict == "not tested"
    recs = [_rec(float("nan"), 1.5)]
    assert StudentTNNGP.check_claims(recs, _rows(recs))[0].verdict == "not tested"


def test_bad_input():
    with pytest.raises(ConfigError, match="b-stds"):
        make_config("student-t-nngp", b_stds="0.1,-1")
    with pytest.raises(ConfigError, match="n-train"):
        make_config("student-t-nngp", n_train=1)


def test_smoke_run(tmp_path):
    cfg = make_config("student-t-nngp", smoke=True)
    _, summary = run_recipe("student-t-nngp", cfg, out=tmp_path / "run")
    assert [c["id"] for c in summary["claims"]] == ["t-nll-below-gp"]
    assert summary["claims"][0]["verdict"] in ("held", "did not hold")
    s = summary["sampler"]
    assert 0 <= s["ks_student_t"] <= 1 and len(s["histogram"]) == 60
    assert len(summary["seeds"]) == 2 and summary["curves"]["t_dof"] > 2
