"""The deep-kernel-machine recipe: targets, the NNGP marginal likelihood, claim logic, bad
input, smoke run."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.deep_kernel_machine import (
    DeepKernelMachineRecipe,
    nngp_log_marginal,
    one_hot_centred,
)
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_targets_and_marginal_likelihood():
    y = one_hot_centred(torch.tensor([0, 2]), 3)
    assert torch.allclose(y.sum(1), torch.zeros(2, dtype=torch.float64))
    assert float(y[1, 2]) == pytest.approx(2 / 3)
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = a @ a.T
    yy = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cov = (k + 0.1 * torch.eye(4, dtype=torch.float64)).numpy()
    ref = sum(stats.multivariate_normal(cov=cov).logpdf(yy[:, c].numpy()) for c in range(2))
    assert nngp_log_marginal(k, yy, 0.1) == pytest.approx(ref)


def _rec(split, nngp, dkm, acc=90.0, rose=True):
    return {
        "split": split,
        "nngp": {"test_mse": nngp, "test_acc": acc},
        "dkm": {"test_mse": dkm, "test_acc": acc},
        "objective": [0.0, 1.0 if rose else 0.0],
        "chance": 10.0,
    }


def _rows(recs):
    from weightlab.recipes.stats import mean_std

    out = {}
    for m in ("nngp", "dkm"):
        mse, acc = (
            mean_std([r[m]["test_mse"] for r in recs]),
            mean_std([r[m]["test_acc"] for r in recs]),
        )
        out[m] = {
            "test_mse_mean": mse[0],
            "test_mse_std": mse[1],
            "test_acc_mean": acc[0],
            "test_acc_std": acc[1],
        }
    return out


def test_claim_logic():
    recs = [_rec(0, 0.02, 0.018), _rec(1, 0.02, 0.021)]
    assert DeepKernelMachineRecipe.check_claims(recs, _rows(recs))[0].verdict == "held"
    recs = [_rec(0, 0.02, 0.022)]
    assert DeepKernelMachineRecipe.check_claims(recs, _rows(recs))[0].verdict == "did not hold"
    recs = [_rec(0, 0.02, 0.01, acc=15.0)]
    assert DeepKernelMachineRecipe.check_claims(recs, _rows(recs))[0].verdict == "not tested"
    recs = [_rec(0, 0.02, 0.01, rose=False)]
    c = DeepKernelMachineRecipe.check_claims(recs, _rows(recs))[0]
    assert c.verdict == "not tested" and "did not rise" in c.detail


def test_bad_input():
    with pytest.raises(ConfigError, match="n-train"):
        run_recipe("deep-kernel-machine", make_config("deep-kernel-machine", n_train=5000))
    with pytest.raises(ConfigError, match="rounds"):
        make_config("deep-kernel-machine", rounds=0)


def test_smoke_run(tmp_path):
    cfg = make_config("deep-kernel-machine", smoke=True)
    _, summary = run_recipe("deep-kernel-machine", cfg, out=tmp_path / "run")
    (c,) = summary["claims"]
    assert c["verdict"] in ("held", "did not hold")
    for r in summary["splits"]:
        assert r["objective"][-1] > r["objective"][0]
        assert all(d > 0 for d in r["prior_distance"])
